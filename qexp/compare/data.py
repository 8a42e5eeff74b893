"""Read a study back from MLflow: one row per run, plus each run's per-document results.

Relies only on the naming contract of `qexp.contract` (tags `qexp.*`, metrics `<task>/<metric>`,
artifacts `identity.json`, `lm_eval/results.json` and `lm_eval/samples/<task>.jsonl`), and reads
the store through `qexp.tracking.Store`, whose runs are `RunRecord`s.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import QexpError
from ..files import atomic_file, default_cache_dir, digest, read_jsonl
from ..identity import eval_identity, run_label
from ..schema import tracking_defaults
from ..contract import ARTIFACTS, METRICS, TAGS
from ..tracking import RunRecord, Store, redact

__all__ = ["Study", "load_study", "run_label"]

# How the parts of a run's eval identity (qexp.identity.eval_identity) are named in the report.
SETTING_NAMES = {"tasks": "tasks", "num_fewshot": "few-shot", "limit": "limit", "seed": "seed",
                 "data": "data", "own_data": "held-out data", "dtype": "dtype", "backend": "backend"}


@dataclass
class Study:
    """The runs of one model in one experiment, ready for the tables."""

    runs: pd.DataFrame  # index: label; columns: run info (incl. eval_hash) and one column per metric
    docs: dict[str, pd.DataFrame]  # label -> per-document rows: task, doc_key, acc, acc_norm, ...
    tasks: list[str]  # the accuracy tasks requested by eval.tasks
    perplexity_tasks: list[str] = field(default_factory=list)  # e.g. sharegpt_heldout (lower is better)
    groups: dict[str, list[str]] = field(default_factory=dict)  # group -> leaf tasks
    settings: dict[str, dict[str, str]] = field(default_factory=dict)  # label -> evaluation setting -> value
    repeats: dict[str, list[str]] = field(default_factory=dict)  # configuration -> its runs over calibration seeds
    notes: list[str] = field(default_factory=list)  # what the loader chose or could not find
    _cache: dict = field(default_factory=dict, repr=False)  # matrices, pair sums and scores, built once

    @property
    def labels(self) -> list[str]:
        return list(self.runs.index)

    @property
    def baseline(self) -> str | None:
        label = run_label("none", 0)
        return label if label in self.runs.index else None

    def leaves(self, task: str) -> list[str]:
        out = []
        for child in self.groups.get(task, []):
            out += self.leaves(child) if child in self.groups else [child]
        return out or [task]

    def correctness(self, task: str, metric: str = "acc", filter_: str = "none") -> pd.DataFrame | None:
        """Documents × runs: each run's per-document `metric` on `task` (a group pools its leaves), NaN
        where a run did not score the document. Built once per metric for all tasks and runs."""
        wide = self._wide(metric)
        if wide is None:
            return None
        index = wide.index
        part = wide[index.get_level_values("task").isin(self.leaves(task)) & (index.get_level_values("filter") == filter_)]
        return part if len(part) else None

    def _wide(self, metric: str) -> pd.DataFrame | None:
        if metric not in self._cache:
            frames = [table.assign(label=label) for label, table in self.docs.items() if metric in table]
            if not frames:
                self._cache[metric] = None
            else:
                long = pd.concat(frames, ignore_index=True)
                wide = long.pivot(index=["task", "filter", "doc_key"], columns="label", values=metric)
                self._cache[metric] = wide.reindex(columns=self.labels)
        return self._cache[metric]


def settings_of(ident: dict) -> dict[str, str]:
    """A run's evaluation settings, one printable value per named setting."""
    out = {}
    for key, value in eval_identity(ident).items():
        if key == "versions":
            out.update({f"{lib} version": str(version) for lib, version in value.items()})
        elif key == "backend":  # eval.backend=vllm (speed.served.ServedPlan.identity)
            extras = [value.get("runtime", "?")] + ["W4A8"] * bool(value.get("w4a8")) + [
                "eager"] * bool(value.get("enforce_eager"))
            out[SETTING_NAMES[key]] = f"{value.get('name', '?')} ({', '.join(extras)})"
        else:
            out[SETTING_NAMES.get(key, key)] = digest(value, 8) if isinstance(value, (dict, list)) else str(value)
    out.setdefault(SETTING_NAMES["backend"], "hf")  # runs evaluated in transformers name no backend
    return out


def _doc_rows(path: Path, task: str) -> list[dict]:
    """One row per document and filter: lm-eval writes a record per filter (e.g. gsm8k's strict-match
    and flexible-extract), which are views of one document, not more documents."""
    rows, seen = [], Counter()
    for record in read_jsonl(path):
        key, filter_ = str(record.get("doc_hash", record.get("doc_id"))), str(record.get("filter", "none"))
        seen[key, filter_] += 1
        row = {"task": task, "filter": filter_, "doc_key": f"{key}#{seen[key, filter_]}"}
        for metric, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and metric not in ("doc_id",):
                row[metric] = float(value)
            elif metric == "bits_per_byte" and isinstance(value, list) and len(value) == 2:
                row["loglikelihood"], row["n_bytes"] = float(value[0]), float(value[1])  # rolling log-likelihood
        rows.append(row)
    return rows


@dataclass
class _RunArtifacts:
    """What the report reads from a run's artifacts, parsed."""

    identity: dict | None
    docs: pd.DataFrame | None  # per-document rows; None without lm_eval/samples
    results: dict  # lm-eval's results.json (for group_subtasks)


def _read_artifacts(store: Store, run: RunRecord, folder: Path) -> _RunArtifacts:
    """A FINISHED run's identity and samples, parsed once and cached. The entry is keyed by the run's
    end time and metrics too: a run whose evaluation was logged again, or that ended again, is read anew."""
    run_id = run.run_id
    version = digest([run.end_time, run.metrics])
    cache = default_cache_dir() / "compare" / digest(store.uri) / f"{run_id}.{version}.pkl"
    if cache.is_file():
        try:
            return pd.read_pickle(cache)
        except Exception:  # an unreadable cache entry is rebuilt
            pass
    ident = store.download(run_id, ARTIFACTS.IDENTITY, folder)
    local = store.download(run_id, ARTIFACTS.LM_EVAL, folder)
    results, rows = {}, []
    if local is not None:
        results = json.loads((local / "results.json").read_text()) if (local / "results.json").is_file() else {}
        for path in sorted((local / "samples").glob("*.jsonl")):
            rows += _doc_rows(path, path.stem)
    parsed = _RunArtifacts(json.loads(ident.read_text()) if ident else None, pd.DataFrame(rows) if rows else None,
                           results)
    with atomic_file(cache) as tmp:
        pd.to_pickle(parsed, tmp)
    return parsed


# Params that tell two configurations of one method and sample count apart, and how a label shows them
# (model.dtype: what the model was quantized in; a study may sweep it, docs/offline.md).
VARIANT_PARAMS = ("quant.", "calib.seed", "calib.max_seq_length", "calib.source", "model.dtype")
SHORT = {"quant.group_size": "g", "calib.seed": "seed", "calib.max_seq_length": "len"}
REPEAT_PARAM = "calib.seed"  # runs that differ only in it are repeats of one configuration
SHARED = ("quant.group_size",)  # quant settings GPTQ and AWQ share: compared methods must agree on them


def _variant(run: RunRecord) -> dict[str, str]:
    # The baseline is only evaluated: what a sweep that claimed it quantizes in is no part of it.
    ignored = ("quant.name", "model.dtype") if run.tags.get(TAGS.QUANT) == "none" else ("quant.name",)
    return {k: v for k, v in run.params.items() if k.startswith(VARIANT_PARAMS) and k not in ignored}


def _labels(runs: list[RunRecord]) -> list[dict[str, str]]:
    """Per run: its `label` (`GPTQ-215`, plus whatever else varies between the runs of that method:
    `GPTQ-215 g64 seed1`, so no two configurations share a label), the `repeat` group (the label
    without the seed), its `variant` (the added part), the part methods share (`shared`) and its
    quantization settings alone (`shared_quant`, what a data-free method shares with the others)."""
    variants = [_variant(r) for r in runs]
    methods = [r.tags[TAGS.QUANT] for r in runs]
    varying: dict[str, list[str]] = {}
    for method in set(methods):
        mine = [v for v, m in zip(variants, methods) if m == method]
        keys = sorted({k for v in mine for k in v}, key=lambda k: (not k.startswith("quant."), k))
        varying[method] = [k for k in keys if len({v.get(k) for v in mine}) > 1]
    out = []
    for run, variant, method in zip(runs, variants, methods):
        base = run_label(method, run.tags.get(TAGS.CALIB_N, "?"))
        parts = {k: f"{SHORT.get(k, k.rsplit('.', 1)[-1] + '=')}{variant.get(k)}" for k in varying[method]}
        out.append({
            "label": " ".join([base, *parts.values()]),
            "repeat": " ".join([base] + [part for k, part in parts.items() if k != REPEAT_PARAM]),
            "variant": " ".join(parts.values()),
            "shared": " ".join(part for k, part in parts.items() if not k.startswith("quant.") or k in SHARED),
            "shared_quant": " ".join(part for k, part in parts.items() if k in SHARED),
        })
    return out


def _choose(runs: list[RunRecord], model: str | None, notes: list[str]) -> tuple[list, dict[str, list[str]]]:
    """One model's runs, the newest per label; and the repeats: configurations run with several seeds."""
    models = sorted({r.tags.get(TAGS.MODEL, "") for r in runs})
    if model:
        runs = [r for r in runs if r.tags.get(TAGS.MODEL) == model]
    elif len(models) > 1:
        raise QexpError(f"The experiment holds runs of several models {models} <model=None>. "
                        "Choose one with --model (or load_study(model=...)).")
    chosen: dict[str, str] = {}
    kept, repeats = [], {}
    for run, names in zip(runs, _labels(runs)):  # newest first
        label = names["label"]
        if label in chosen:
            notes.append(f"{label}: using run {chosen[label]} (newest); ignored older run {run.run_id}")
            continue
        chosen[label] = run.run_id
        kept.append((names, run))
        repeats.setdefault(names["repeat"], []).append(label)
    return kept, {group: sorted(labels) for group, labels in repeats.items() if len(labels) > 1}


def _row(names: dict[str, str], run: RunRecord) -> dict:
    tags = run.tags
    return {
        "label": names["label"], "variant": names["variant"], "shared_variant": names["shared"],
        "shared_quant": names["shared_quant"],
        "run_id": run.run_id, "method": tags[TAGS.QUANT],
        "calib_n": int(tags.get(TAGS.CALIB_N, 0) or 0), "model": tags.get(TAGS.MODEL),
        "eval_data": tags.get(TAGS.EVAL_DATA, "unknown"), "eval_source": tags.get(TAGS.EVAL_SOURCE),
        "config_hash": tags.get(TAGS.CONFIG_HASH),
        "eval_hash": tags.get(TAGS.EVAL_HASH), "sweep_id": tags.get(TAGS.SWEEP_ID),
        "start_time": pd.to_datetime(run.start_time, unit="ms"), "eval_tasks": run.params.get("eval.tasks"),
        "speed": tags.get(TAGS.SPEED), "speed_note": tags.get(TAGS.SPEED_NOTE), "speed_kernel": tags.get(TAGS.SPEED_KERNEL),
        "speed_path": tags.get(TAGS.SPEED_PATH), "eval_backend": tags.get(TAGS.EVAL_BACKEND),
        "eval_path": tags.get(TAGS.EVAL_PATH), "speed_device": tags.get(TAGS.SPEED_DEVICE),
        "speed_runtime": tags.get(TAGS.SPEED_RUNTIME), "sequential": tags.get(TAGS.SEQUENTIAL),
        "sequential_reason": tags.get(TAGS.SEQUENTIAL_REASON),
        "sequential_tasks": {name.removeprefix(TAGS.sequential_task("")): verdict for name, verdict in tags.items()
                             if name.startswith(TAGS.sequential_task(""))},  # eval.sequential.per_task
        **run.metrics,
    }


def load_study(
    tracking_uri: str | None = None,
    experiment: str | None = None,
    *,
    model: str | None = None,
    sweep_id: str | None = None,
    include_runs: Iterable[str] = (),
    with_docs: bool = True,
    outage_seconds: float = 0,
) -> Study:
    """Query MLflow for the FINISHED qexp runs of one model; the newest run wins per label.

    The store and experiment default to the composed config's (`tracking.uri`, `tracking.experiment`).
    With `sweep_id`, the runs of that sweep, any baseline, and the runs named in `include_runs`.
    `outage_seconds`: how long to wait for a store that stops answering part way (the sweep's report).
    """
    defaults = tracking_defaults() if tracking_uri is None or experiment is None else None
    store = Store.open(tracking_uri or defaults.uri, experiment or defaults.experiment, create=False)
    store.wait_out_outages(outage_seconds)
    notes: list[str] = []
    chosen, repeats = _choose(store.study_runs(sweep_id, include_runs), model, notes)
    if not chosen:
        raise QexpError(f"No finished qexp runs in <tracking.experiment={store.experiment!r}> at "
                        f"<tracking.uri={redact(store.uri)!r}>" + (f" for <model={model!r}>" if model else "")
                        + ". Run a sweep first.")
    frame = pd.DataFrame([_row(names, run) for names, run in chosen]).set_index("label")
    baseline = run_label("none", 0)
    order = sorted(frame.index, key=lambda lbl: (lbl != baseline, frame.loc[lbl, "method"], frame.loc[lbl, "calib_n"], lbl))
    frame = frame.loc[order]

    requested = json.loads(frame["eval_tasks"].dropna().iloc[0]) if frame["eval_tasks"].notna().any() else []
    perplexity = [t for t in requested if METRICS.task(t, "word_perplexity") in frame]
    tasks = [t for t in requested if t not in perplexity]
    docs, groups, settings = {}, {}, {}
    runs = {run.run_id: run for _, run in chosen}
    with tempfile.TemporaryDirectory() as tmp:
        for label, run_id in frame["run_id"].items():
            if pd.isna(frame.loc[label, "eval_hash"]):
                notes.append(f"{label}: no {TAGS.EVAL_HASH} tag (logged by an older qexp); "
                             "whether its evaluation settings match the others' is not checked")
            artifacts = _read_artifacts(store, runs[run_id], Path(tmp) / run_id)
            if artifacts.identity is not None:
                settings[label] = settings_of(artifacts.identity)
            if not with_docs:
                continue
            if artifacts.docs is None:
                notes.append(f"{label}: no lm_eval/samples artifacts; its differences are not tested")
                continue
            docs[label] = artifacts.docs
            groups.update({g: list(c) for g, c in artifacts.results.get("group_subtasks", {}).items() if c})
    return Study(runs=frame, docs=docs, tasks=tasks, perplexity_tasks=perplexity, groups=groups, settings=settings,
                 repeats=repeats, notes=notes)
