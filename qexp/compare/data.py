"""Read a study back from MLflow: one row per run, plus each run's per-document results.

Relies only on the naming contract written by `qexp.tracking` (tags `qexp.*`, metrics
`<task>/<metric>`, artifacts `lm_eval/results.json` and `lm_eval/samples/<task>.jsonl`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import QexpError
from ..tracking import TAGS, default_tracking_uri, read_jsonl

__all__ = ["Study", "load_study", "default_tracking_uri", "run_label", "SETTINGS"]

# Evaluation settings that must match for two scores to be comparable (param or tag name).
SETTINGS = {
    "limit": "eval.limit",
    "few-shot": "eval.num_fewshot",
    "data source": "tag:" + TAGS.EVAL_DATA,
    "data folder": "eval.data_dir",
    "lm-eval version": "versions.lm_eval",
    "batch size": "eval.batch_size",
    "dtype": "model.dtype",
}


def run_label(method: str, calib_n: int | str) -> str:
    return "Baseline" if method == "none" else f"{method.upper()}-{calib_n}"


@dataclass
class Study:
    """The runs of one model in one experiment, ready for the tables."""

    runs: pd.DataFrame  # index: label; columns: run info, settings, and one column per metric
    docs: dict[str, pd.DataFrame]  # label -> per-document rows: task, doc_key, acc, acc_norm, ...
    tasks: list[str]  # the accuracy tasks requested by eval.tasks
    perplexity_tasks: list[str] = field(default_factory=list)  # e.g. sharegpt_heldout (lower is better)
    groups: dict[str, list[str]] = field(default_factory=dict)  # group -> leaf tasks
    notes: list[str] = field(default_factory=list)  # what the loader chose or could not find

    @property
    def labels(self) -> list[str]:
        return list(self.runs.index)

    @property
    def baseline(self) -> str | None:
        return "Baseline" if "Baseline" in self.runs.index else None

    def leaves(self, task: str) -> list[str]:
        out = []
        for child in self.groups.get(task, []):
            out += self.leaves(child) if child in self.groups else [child]
        return out or [task]


def _flatten_groups(group_subtasks: dict[str, list[str]]) -> dict[str, list[str]]:
    return {group: list(children) for group, children in group_subtasks.items() if children}


def _doc_rows(path: Path, task: str) -> list[dict]:
    rows, seen = [], Counter()
    for record in read_jsonl(path):
        key = str(record.get("doc_hash", record.get("doc_id")))
        seen[key] += 1
        row = {"task": task, "doc_key": f"{key}#{seen[key]}"}
        for metric, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and metric not in ("doc_id",):
                row[metric] = float(value)
            elif metric == "bits_per_byte" and isinstance(value, list) and len(value) == 2:
                row["loglikelihood"], row["n_bytes"] = float(value[0]), float(value[1])  # rolling log-likelihood
        rows.append(row)
    return rows


def _load_docs(client, run_id: str, folder: Path) -> tuple[pd.DataFrame | None, dict]:
    try:
        local = Path(client.download_artifacts(run_id, "lm_eval", str(folder)))
    except Exception:
        return None, {}
    results = json.loads((local / "results.json").read_text()) if (local / "results.json").is_file() else {}
    rows: list[dict] = []
    for path in sorted((local / "samples").glob("*.jsonl")):
        rows += _doc_rows(path, path.stem)
    return (pd.DataFrame(rows) if rows else None), results


def load_study(
    tracking_uri: str | None = None,
    experiment: str = "qexp",
    *,
    model: str | None = None,
    sweep_id: str | None = None,
    with_docs: bool = True,
) -> Study:
    """Query MLflow for the FINISHED qexp runs of one model; the newest run wins per label."""
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    try:
        found = client.get_experiment_by_name(experiment)
    except Exception as err:
        raise QexpError(f"Cannot read the MLflow store <tracking_uri={uri!r}>: {err}. "
                        "Pass --tracking-uri (or set MLFLOW_TRACKING_URI) to the store qexp wrote.") from None
    if found is None:
        raise QexpError(f"No experiment <experiment={experiment!r}> in <tracking_uri={uri!r}>. "
                        "Run `python -m qexp` first, or pass --experiment/--tracking-uri.")
    query = ["attributes.status = 'FINISHED'", f"tags.`{TAGS.QUANT}` != ''"]
    if sweep_id:
        query.append(f"tags.`{TAGS.SWEEP_ID}` = '{sweep_id}'")
    runs = client.search_runs([found.experiment_id], " and ".join(query),
                              order_by=["attributes.start_time DESC"], max_results=5000)
    if sweep_id:  # the sweep's baseline may come from an earlier sweep
        runs += client.search_runs([found.experiment_id], " and ".join(query[:1] + [f"tags.`{TAGS.QUANT}` = 'none'"]),
                                   order_by=["attributes.start_time DESC"])
    models = sorted({r.data.tags.get(TAGS.MODEL, "") for r in runs})
    if model:
        runs = [r for r in runs if r.data.tags.get(TAGS.MODEL) == model]
    elif len(models) > 1:
        raise QexpError(f"The experiment holds runs of several models {models} <model=None>. "
                        "Choose one with --model (or load_study(model=...)).")
    if not runs:
        raise QexpError(f"No finished qexp runs in <experiment={experiment!r}> at <tracking_uri={uri!r}>"
                        + (f" for <model={model!r}>" if model else "") + ". Run a sweep first.")

    notes, rows, chosen = [], [], {}
    for run in runs:  # newest first
        tags, params = run.data.tags, run.data.params
        label = run_label(tags[TAGS.QUANT], tags.get(TAGS.CALIB_N, "?"))
        if label in chosen:
            notes.append(f"{label}: using run {chosen[label]} (newest); ignored older run {run.info.run_id}")
            continue
        chosen[label] = run.info.run_id
        row = {
            "label": label, "run_id": run.info.run_id, "method": tags[TAGS.QUANT],
            "calib_n": int(tags.get(TAGS.CALIB_N, 0) or 0), "model": tags.get(TAGS.MODEL),
            "eval_data": tags.get(TAGS.EVAL_DATA, "unknown"), "config_hash": tags.get(TAGS.CONFIG_HASH),
            "sweep_id": tags.get(TAGS.SWEEP_ID), "start_time": pd.to_datetime(run.info.start_time, unit="ms"),
            "eval_tasks": params.get("eval.tasks"),
        }
        for name, source in SETTINGS.items():
            row[f"setting:{name}"] = tags.get(source[4:]) if source.startswith("tag:") else params.get(source)
        row.update(run.data.metrics)
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("label")
    order = sorted(frame.index, key=lambda lbl: (lbl != "Baseline", frame.loc[lbl, "method"], frame.loc[lbl, "calib_n"]))
    frame = frame.loc[order]

    requested = json.loads(frame["eval_tasks"].dropna().iloc[0]) if frame["eval_tasks"].notna().any() else []
    perplexity = [t for t in requested if f"{t}/word_perplexity" in frame]
    tasks = [t for t in requested if t not in perplexity]
    docs, groups = {}, {}
    if with_docs:
        with tempfile.TemporaryDirectory() as tmp:
            for label, run_id in frame["run_id"].items():
                table, results = _load_docs(client, run_id, Path(tmp) / run_id)
                if table is None:
                    notes.append(f"{label}: no lm_eval/samples artifacts; its differences are not tested")
                    continue
                docs[label] = table
                groups.update(_flatten_groups(results.get("group_subtasks", {})))
    return Study(runs=frame, docs=docs, tasks=tasks, perplexity_tasks=perplexity, groups=groups, notes=notes)
