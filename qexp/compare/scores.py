"""What each run scored: the metric used per task, scores with Wilson intervals, the summary table,
repeats across calibration seeds, and the evaluation settings that differ between runs.

Scores are MLflow's metrics (fractions); the per-document records give the document counts.
"""

from __future__ import annotations

import math

import pandas as pd

from ..contract import METRICS
from .data import Study
from .stats import wilson_intervals

__all__ = [
    "MMLU_CATEGORIES", "task_correctness", "display_name", "split_metric", "metric_column", "metric_for", "scores",
    "summary_table", "settings_warnings", "repeats_table",
]


MMLU_CATEGORIES = ["mmlu_humanities", "mmlu_other", "mmlu_social_sciences", "mmlu_stem"]


_NAMES = {"arc_challenge": "ARC Challenge", "arc_easy": "ARC Easy", "hellaswag": "HellaSwag", "mmlu": "MMLU",
          "mmlu_humanities": "Humanities", "mmlu_other": "Other", "mmlu_social_sciences": "Social sciences",
          "mmlu_stem": "STEM", "piqa": "PIQA", "winogrande": "Winogrande", "lambada_openai": "LAMBADA",
          "average": "Average"}


def display_name(task: str) -> str:
    return _NAMES.get(task) or task.removeprefix("mmlu_").replace("_", " ")


def split_metric(spec: str) -> tuple[str, str]:
    """`acc` -> (`acc`, `none`); `exact_match,strict-match` -> (`exact_match`, `strict-match`)."""
    metric, _, filter_ = spec.partition(",")
    return metric, filter_ or "none"


def metric_column(task: str, spec: str) -> str:
    """The MLflow metric holding `task`'s score under `spec`: `arc_easy/acc`, `gsm8k/exact_match/strict-match`."""
    metric, filter_ = split_metric(spec)
    return METRICS.task(task, metric, filter_)


def metric_for(study: Study, task: str, metric: str = "acc", overrides: dict[str, str] | None = None) -> str:
    """The metric (with its filter, `exact_match,strict-match`) used for `task`: the override, else
    `metric`, else `acc`, else the first score the task has (a generative task has no `acc`)."""
    wanted = (overrides or {}).get(task, metric)
    for spec in (wanted, "acc", *_task_scores(study, task)):
        column = metric_column(task, spec)
        if column in study.runs and study.runs[column].notna().any():
            return spec
    return wanted


def _task_scores(study: Study, task: str) -> list[str]:
    """The score metrics a task has in MLflow, as specs (`exact_match,strict-match`), stderr and counts left out."""
    specs = []
    for column in study.runs.columns:
        parts = str(column).split("/")
        if parts[0] == task and len(parts) in (2, 3) and not parts[1].endswith("_stderr") and parts[1] != "n_samples":
            specs.append(",".join(parts[1:]))
    return sorted(specs)


def task_correctness(study: Study, task: str, spec: str) -> pd.DataFrame | None:
    metric, filter_ = split_metric(spec)
    return study.correctness(task, metric, filter_)


def scores(study: Study, tasks: list[str], metric: str = "acc", overrides: dict[str, str] | None = None) -> pd.DataFrame:
    """Long table: one row per (run, task) with the full-set score, documents and 95% Wilson interval."""
    key = ("scores", tuple(tasks), metric, tuple(sorted((overrides or {}).items())))
    if key not in study._cache:
        study._cache[key] = _scores(study, tasks, metric, overrides)
    return study._cache[key].copy()


def _scores(study: Study, tasks: list[str], metric: str, overrides: dict[str, str] | None) -> pd.DataFrame:
    labels = list(study.labels)
    columns: dict[str, list] = {"task": [], "metric": [], "score": [], "n": []}
    for task in tasks:
        used = metric_for(study, task, metric, overrides)
        matrix = task_correctness(study, task, used)
        counts = matrix.notna().sum().to_dict() if matrix is not None else {}
        values = study.runs.get(metric_column(task, used), pd.Series(math.nan, index=study.runs.index)).to_dict()
        logged = study.runs.get(METRICS.task(task, "n_samples"), pd.Series(0, index=study.runs.index)).fillna(0).to_dict()
        for name, column in zip(columns, ([task] * len(labels), [used] * len(labels), [values[x] for x in labels],
                                          [int(counts.get(x) or logged[x] or 0) for x in labels])):
            columns[name].append(column)
    # One row per (run, task), runs in the study's order, tasks in the order asked.
    frame = pd.DataFrame({"label": [label for label in labels for _ in tasks],
                          **{name: [part[i] for i in range(len(labels)) for part in parts]
                             for name, parts in columns.items()}})
    frame["ci_low"], frame["ci_high"] = wilson_intervals(frame["score"].to_numpy(dtype=float) * frame["n"], frame["n"])
    return frame[["label", "task", "metric", "score", "n", "ci_low", "ci_high"]]


def summary_table(study: Study, tasks: list[str] | None = None, metric: str = "acc",
                  overrides: dict[str, str] | None = None) -> pd.DataFrame:
    """Rows: runs; columns: tasks and their unweighted Average, as fractions."""
    tasks = study.tasks if tasks is None else tasks
    long = scores(study, tasks, metric, overrides)
    wide = long.pivot(index="label", columns="task", values="score").reindex(index=study.labels, columns=tasks)
    wide["average"] = wide[tasks].mean(axis=1, skipna=False)
    return wide


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


def repeats_table(study: Study, summary: pd.DataFrame) -> pd.DataFrame:
    """Configurations run with several calibration seeds: mean and spread (sample standard deviation)
    of each task's score and of the average across the seeds, one row per configuration and column."""
    rows = []
    for group, labels in study.repeats.items():
        for column in summary.columns:
            values = summary.loc[labels, column]
            rows.append({"configuration": group, "task": column, "runs": len(labels), "mean": values.mean(),
                         "std": values.std(ddof=1), "min": values.min(), "max": values.max()})
    return pd.DataFrame(rows, columns=["configuration", "task", "runs", "mean", "std", "min", "max"])
