"""The study's tables, as tidy DataFrames built from a `Study`.

Scores are MLflow's metrics (fractions); intervals and tests use the per-document records.
Every comparison table carries raw and Holm-adjusted p-values; `winner` names a run only
when the adjusted p-value is below ALPHA.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from .data import Study
from .stats import ALPHA, holm, mcnemar_exact, wilson_interval

__all__ = [
    "MMLU_CATEGORIES",
    "display_name",
    "metric_for",
    "scores",
    "summary_table",
    "compare",
    "deltas_vs_baseline",
    "mmlu_categories",
    "mmlu_subjects",
    "method_comparison",
    "calibration_comparison",
    "ranking",
    "recommendations",
    "settings_warnings",
    "perplexity_table",
    "cost_table",
]

MMLU_CATEGORIES = ["mmlu_humanities", "mmlu_other", "mmlu_social_sciences", "mmlu_stem"]
_NAMES = {"arc_challenge": "ARC Challenge", "arc_easy": "ARC Easy", "hellaswag": "HellaSwag", "mmlu": "MMLU",
          "mmlu_humanities": "Humanities", "mmlu_other": "Other", "mmlu_social_sciences": "Social sciences",
          "mmlu_stem": "STEM", "average": "Average"}


def display_name(task: str) -> str:
    return _NAMES.get(task) or task.removeprefix("mmlu_").replace("_", " ")


def metric_for(study: Study, task: str, metric: str = "acc", overrides: dict[str, str] | None = None) -> str:
    """The metric used for `task`: the override, else `metric`, else `acc` when the task lacks it."""
    wanted = (overrides or {}).get(task, metric)
    column = f"{task}/{wanted}"
    return wanted if column in study.runs and study.runs[column].notna().any() else "acc"


def _correctness(study: Study, label: str, task: str, metric: str) -> pd.Series | None:
    table = study.docs.get(label)
    if table is None:
        return None
    rows = table[table["task"].isin(study.leaves(task))]
    if rows.empty:
        return None
    column = metric if metric in rows and rows[metric].notna().all() else "acc"
    return rows.set_index(["task", "doc_key"])[column]


def scores(study: Study, tasks: list[str], metric: str = "acc", overrides: dict[str, str] | None = None) -> pd.DataFrame:
    """Long table: one row per (run, task) with score, documents and 95% Wilson interval."""
    rows = []
    for label in study.labels:
        for task in tasks:
            used = metric_for(study, task, metric, overrides)
            value = study.runs.loc[label].get(f"{task}/{used}", math.nan)
            docs = _correctness(study, label, task, used)
            n = int(docs.size) if docs is not None else int(study.runs.loc[label].get(f"{task}/n_samples", 0) or 0)
            low, high = wilson_interval(value * n, n) if n and not pd.isna(value) else (math.nan, math.nan)
            rows.append({"label": label, "task": task, "metric": used, "score": value, "n": n,
                         "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def summary_table(study: Study, tasks: list[str] | None = None, metric: str = "acc",
                  overrides: dict[str, str] | None = None) -> pd.DataFrame:
    """Rows: runs; columns: tasks and their unweighted Average, as fractions."""
    tasks = tasks or study.tasks
    long = scores(study, tasks, metric, overrides)
    wide = long.pivot(index="label", columns="task", values="score").reindex(index=study.labels, columns=tasks)
    wide["average"] = wide[tasks].mean(axis=1, skipna=False)
    return wide


def _settings_differ(study: Study, a: str, b: str) -> str:
    """The evaluation settings two runs do not share: empty when their eval hashes agree (or one is unknown)."""
    hash_a, hash_b = study.runs.loc[a, "eval_hash"], study.runs.loc[b, "eval_hash"]
    if pd.isna(hash_a) or pd.isna(hash_b) or hash_a == hash_b:
        return ""
    mine, theirs = study.settings.get(a, {}), study.settings.get(b, {})
    names = list(dict.fromkeys([*mine, *theirs]))
    return ", ".join(n for n in names if mine.get(n) != theirs.get(n)) or "evaluation settings (eval_hash)"


def compare(study: Study, pairs: list[tuple[str, str]], tasks: list[str], table: str, metric: str = "acc",
            overrides: dict[str, str] | None = None) -> pd.DataFrame:
    """Paired comparisons `a` vs `b` per task; `delta` = a - b; Holm across the whole table."""
    rows = []
    for (a, b), task in itertools.product(pairs, tasks):
        used = metric_for(study, task, metric, overrides)
        score_a = study.runs.loc[a].get(f"{task}/{used}", math.nan)
        score_b = study.runs.loc[b].get(f"{task}/{used}", math.nan)
        row = {"table": table, "a": a, "b": b, "task": task, "metric": used, "score_a": score_a,
               "score_b": score_b, "delta": score_a - score_b, "n": 0, "a_only": 0, "b_only": 0,
               "p_value": math.nan, "settings_differ": _settings_differ(study, a, b)}
        docs_a, docs_b = _correctness(study, a, task, used), _correctness(study, b, task, used)
        if docs_a is not None and docs_b is not None:
            joined = pd.concat([docs_a.rename("a"), docs_b.rename("b")], axis=1, join="inner")
            test = mcnemar_exact(joined["a"].to_numpy(), joined["b"].to_numpy())
            row.update(n=test.n, a_only=test.a_only, b_only=test.b_only, p_value=test.p_value)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["table", "a", "b", "task", "metric", "score_a", "score_b", "delta", "n",
                                        "a_only", "b_only", "p_value", "settings_differ"])
    frame["p_adjusted"] = holm(frame["p_value"].to_numpy()) if len(frame) else []
    frame["significant"] = frame["p_adjusted"] < ALPHA
    frame["winner"] = [
        (r.a if r.delta > 0 else r.b) if r.significant else "not significant" for r in frame.itertuples()
    ]
    return frame


def deltas_vs_baseline(study: Study, tasks: list[str] | None = None, metric: str = "acc",
                       overrides: dict[str, str] | None = None, table: str = "vs_baseline") -> pd.DataFrame:
    """Each quantized run against the baseline, per task, best first within a task."""
    if not study.baseline:
        return compare(study, [], [], table)
    pairs = [(label, study.baseline) for label in study.labels if label != study.baseline]
    frame = compare(study, pairs, tasks or study.tasks, table, metric, overrides)
    return frame.sort_values(["task", "delta"], ascending=[True, False], key=_task_order(tasks or study.tasks))


def _task_order(tasks: list[str]):
    def key(column: pd.Series):
        return column.map({t: i for i, t in enumerate(tasks)}) if column.name == "task" else column
    return key


def mmlu_categories(study: Study, metric: str = "acc") -> pd.DataFrame:
    present = [c for c in MMLU_CATEGORIES if f"{c}/acc" in study.runs]
    return deltas_vs_baseline(study, present, metric, table="mmlu_categories")


def mmlu_subjects(study: Study) -> pd.DataFrame:
    """Per subject: every run's score; Holm across all subject comparisons with the baseline."""
    subjects = sorted(c[: -len("/acc")] for c in study.runs if c.startswith("mmlu_") and c.endswith("/acc")
                      and c[: -len("/acc")] not in MMLU_CATEGORIES)
    return deltas_vs_baseline(study, subjects, "acc", table="mmlu_subjects")


def method_comparison(study: Study, tasks: list[str] | None = None, metric: str = "acc",
                      overrides: dict[str, str] | None = None) -> pd.DataFrame:
    """Methods against each other at equal calibration size (e.g. GPTQ-215 vs AWQ-215)."""
    runs = study.runs[study.runs["method"] != "none"]
    pairs = []
    for _, same_n in runs.groupby("calib_n", sort=True):
        pairs += list(itertools.combinations(sorted(same_n.index), 2))
    return compare(study, pairs, tasks or study.tasks, "methods", metric, overrides)


def calibration_comparison(study: Study, tasks: list[str] | None = None, metric: str = "acc",
                           overrides: dict[str, str] | None = None) -> pd.DataFrame:
    """Calibration sizes against each other per method (e.g. GPTQ-215 vs GPTQ-512)."""
    runs = study.runs[study.runs["method"] != "none"]
    pairs = []
    for _, same_method in runs.groupby("method", sort=True):
        ordered = list(same_method.sort_values("calib_n").index)
        pairs += list(itertools.combinations(ordered, 2))
    return compare(study, pairs, tasks or study.tasks, "calibration", metric, overrides)


def ranking(study: Study, tasks: list[str] | None = None, metric: str = "acc",
            overrides: dict[str, str] | None = None) -> pd.DataFrame:
    summary = summary_table(study, tasks, metric, overrides)
    ranked = summary[["average"]].sort_values("average", ascending=False)
    ranked.insert(0, "rank", range(1, len(ranked) + 1))
    if study.baseline:
        ranked["vs_baseline"] = ranked["average"] - summary.loc[study.baseline, "average"]
    return ranked


def recommendations(study: Study, tasks: list[str] | None = None, metric: str = "acc",
                    overrides: dict[str, str] | None = None) -> list[str]:
    """Short recommendations that say how much of the ordering the data can support."""
    ranked = ranking(study, tasks, metric, overrides)
    quantized = [label for label in ranked.index if label != study.baseline]
    if not quantized:
        return ["No quantized runs to recommend yet."]
    lines = []
    best = quantized[0]
    rivals = compare(study, [(best, other) for other in quantized[1:]], tasks or study.tasks, "best", metric, overrides)
    beaten = sorted(set(rivals.loc[rivals["significant"] & (rivals["delta"] > 0), "b"]))
    lines.append(
        f"Best quantized configuration overall: {best} (average {ranked.loc[best, 'average']:.1%}). "
        + (f"It is significantly better than {', '.join(beaten)} on at least one task; "
           if beaten else "No task shows a significant difference to the other quantized runs; ")
        + "treat the rest of the ordering as a tie unless more documents are evaluated."
    )
    if study.baseline:
        vs_base = deltas_vs_baseline(study, tasks, metric, overrides)
        mine = vs_base[vs_base["a"] == best]
        worse = list(mine.loc[mine["significant"] & (mine["delta"] < 0), "task"])
        lines.append(
            f"{best} vs Baseline: average {100 * ranked.loc[best, 'vs_baseline']:+.1f} points; "
            + (f"significantly worse on {', '.join(display_name(t) for t in worse)}."
               if worse else "no task is significantly worse than the unquantized model.")
        )
    calib = study.runs.loc[quantized, "calib_n"]
    smallest = calib.min()
    if calib.nunique() > 1:
        budget = [label for label in quantized if calib[label] == smallest][0]
        lines.append(f"Best with a limited calibration budget ({smallest} samples): {budget} "
                     f"(average {ranked.loc[budget, 'average']:.1%}).")
    return lines


def settings_warnings(study: Study) -> list[str]:
    """One line per evaluation setting that differs between runs: their scores are not comparable."""
    warnings = []
    names = list(dict.fromkeys(n for settings in study.settings.values() for n in settings))
    for name in names:
        values = {label: settings.get(name) for label, settings in study.settings.items()}
        if len(set(values.values())) > 1:
            detail = ", ".join(f"{label}={value}" for label, value in values.items())
            warnings.append(f"Evaluation setting '{name}' differs between runs ({detail}); "
                            "comparisons between those runs are flagged.")
    return warnings


def perplexity_table(study: Study) -> pd.DataFrame:
    """Held-out perplexity per run (lower is better), with a paired test against the baseline.

    The test is the Wilcoxon signed-rank test on per-document bits per byte, paired by doc_hash.
    """
    from scipy.stats import wilcoxon

    rows = []
    for task in study.perplexity_tasks:
        base = _bits(study, study.baseline, task) if study.baseline else None
        for label in study.labels:
            run = study.runs.loc[label]
            row = {"label": label, "task": task, "word_perplexity": run.get(f"{task}/word_perplexity", math.nan),
                   "bits_per_byte": run.get(f"{task}/bits_per_byte", math.nan),
                   "n": int(run.get(f"{task}/n_samples", 0) or 0), "delta_bits_per_byte": math.nan,
                   "p_value": math.nan}
            if study.baseline and label != study.baseline:
                row["delta_bits_per_byte"] = row["bits_per_byte"] - study.runs.loc[study.baseline].get(
                    f"{task}/bits_per_byte", math.nan)
                mine = _bits(study, label, task)
                if base is not None and mine is not None:
                    paired = pd.concat([mine.rename("a"), base.rename("b")], axis=1, join="inner")
                    diff = (paired["a"] - paired["b"]).to_numpy()
                    row["p_value"] = 1.0 if not np.any(diff) else float(wilcoxon(diff).pvalue)
            rows.append(row)
    frame = pd.DataFrame(rows, columns=["label", "task", "word_perplexity", "bits_per_byte", "n",
                                        "delta_bits_per_byte", "p_value"])
    frame["p_adjusted"] = holm(frame["p_value"].to_numpy()) if len(frame) else []
    frame["significant"] = frame["p_adjusted"] < ALPHA
    return frame


def _bits(study: Study, label: str, task: str) -> pd.Series | None:
    table = study.docs.get(label)
    if table is None or "loglikelihood" not in table:
        return None
    rows = table[table["task"] == task]
    if rows.empty:
        return None
    return (-rows["loglikelihood"] / rows["n_bytes"] / math.log(2)).set_axis(rows["doc_key"])


COSTS = {"perf/checkpoint_mb": "checkpoint MB", "perf/compression_ratio": "compression x",
         "perf/quant_seconds": "quantize s", "perf/eval_seconds": "evaluate s",
         "perf/peak_rss_mb": "peak RSS MB", "perf/peak_gpu_mb": "peak GPU MB"}


def cost_table(study: Study) -> pd.DataFrame:
    """What each run cost: checkpoint size and compression, quantization and evaluation time, memory."""
    present = [c for c in COSTS if c in study.runs]
    return study.runs[present].rename(columns=COSTS)
