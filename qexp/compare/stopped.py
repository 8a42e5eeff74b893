"""The verdicts of sequentially evaluated runs (eval.sequential), as the report states them.

Such a run stopped evaluating at the first look that decided it against the baseline at
alpha / m, m the study's comparisons sharing alpha (`qexp.stopping`, eval.sequential.comparisons),
and logged its repeated interval (at 1 - alpha/m) and repeated p-values, valid at that stopping
time (`compare.sequential`). The fixed-size tests of the other tables treat the documents it used as
a fixed sample; here its verdict comes from the sequential design, Holm-adjusted across the study's
sequential comparisons as the fixed report adjusts its own: "worse" or "better" stands when the
adjusted repeated p-value is below alpha, "equivalent" when the adjusted repeated equivalence
p-value is. A run that stopped decided at alpha/m keeps its verdict while the report holds at most m
sequential comparisons.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..contract import METRICS
from .data import Study
from .stats import ALPHA, holm

__all__ = ["sequential_table", "sequential_labels", "sequential_task_table"]

COLUMNS = ["label", "stopped", "reason", "looks", "docs", "budget_docs", "delta", "ci_low", "ci_high", "comparisons",
           "p_value", "p_adjusted", "equivalence_p", "equivalence_adjusted", "margin", "verdict", "recovery_low"]


def sequential_labels(study: Study) -> list[str]:
    """The quantized runs that were evaluated sequentially against the baseline."""
    if "sequential" not in study.runs:
        return []
    column = study.runs["sequential"]
    return [label for label in study.labels if isinstance(column[label], str) and column[label] != "baseline"]


def sequential_table(study: Study) -> pd.DataFrame:
    """One row per sequentially evaluated run: how it stopped, its documents, its average difference
    from the baseline with the repeated interval (at 1 - alpha/comparisons), the repeated p-values and their Holm adjustment,
    the verdict that survives it, and the recovery's lower bound from the repeated interval."""
    labels = sequential_labels(study)
    if not labels:
        return pd.DataFrame(columns=COLUMNS)
    runs = study.runs.loc[labels]

    def column(name: str) -> np.ndarray:
        return runs[name].to_numpy(dtype=float) if name in runs else np.full(len(labels), np.nan)

    frame = pd.DataFrame({
        "label": labels, "stopped": runs["sequential"].tolist(), "reason": runs["sequential_reason"].tolist(),
        "looks": column(METRICS.SEQUENTIAL_LOOKS), "docs": column(METRICS.SEQUENTIAL_DOCS),
        "budget_docs": column(METRICS.SEQUENTIAL_BUDGET), "delta": column(METRICS.SEQUENTIAL_DELTA),
        "ci_low": column(METRICS.SEQUENTIAL_LOW), "ci_high": column(METRICS.SEQUENTIAL_HIGH),
        "p_value": column(METRICS.SEQUENTIAL_P), "equivalence_p": column(METRICS.SEQUENTIAL_EQUIVALENCE_P),
        "margin": column(METRICS.SEQUENTIAL_MARGIN),
        "comparisons": np.nan_to_num(column(METRICS.SEQUENTIAL_COMPARISONS), nan=1.0).astype(int)})
    _holm_verdicts(frame)
    base = _baseline_average(study)
    frame["recovery_low"] = 100 * (1 + frame["ci_low"] / base) if base else np.nan
    return frame[COLUMNS]


TASK_COLUMNS = ["label", "task", "stopped", "looks", "docs", "futile", "delta", "ci_low", "ci_high", "comparisons",
                "p_value", "p_adjusted", "equivalence_p", "equivalence_adjusted", "verdict"]


def sequential_task_table(study: Study) -> pd.DataFrame:
    """eval.sequential.per_task: one row per sequentially evaluated run and requested task, each task
    decided on its own at alpha / (the run's comparisons × its tasks): how it stopped, its documents, its
    difference with the repeated interval, the repeated p-values Holm-adjusted across every row, and
    the verdict that survives it."""
    rows = []
    for label in sequential_labels(study):
        run = study.runs.loc[label]
        verdicts = (run.get("sequential_tasks") if "sequential_tasks" in study.runs else None) or {}
        comparisons = run.get(METRICS.SEQUENTIAL_COMPARISONS)
        shared = int(1 if pd.isna(comparisons) else comparisons) * len(verdicts)  # alpha / (runs x tasks)
        for task, stopped in sorted(verdicts.items()):
            rows.append({"label": label, "task": task, "stopped": stopped, "comparisons": shared,
                         **{name: float(run.get(METRICS.sequential_task(task, name), np.nan))
                            for name in METRICS.SEQUENTIAL_TASK_FIGURES}})
    if not rows:
        return pd.DataFrame(columns=TASK_COLUMNS)
    frame = pd.DataFrame(rows)
    _holm_verdicts(frame)
    return frame[TASK_COLUMNS]


def _holm_verdicts(frame: pd.DataFrame) -> None:
    """Holm across the frame's rows, for a difference and for equivalence, and the verdict that survives."""
    frame["p_adjusted"] = holm(np.nan_to_num(frame["p_value"].to_numpy(), nan=1.0))
    frame["equivalence_adjusted"] = holm(np.nan_to_num(frame["equivalence_p"].to_numpy(), nan=1.0))
    frame["verdict"] = [("worse" if d < 0 else "better") if p < ALPHA else "equivalent" if e < ALPHA
                        else "not shown to differ" for d, p, e in
                        zip(frame["delta"], frame["p_adjusted"], frame["equivalence_adjusted"])]


def _baseline_average(study: Study) -> float | None:
    """The baseline's average score in points (each task weighing the same), as the summary's."""
    if not study.baseline:
        return None
    scores = [study.runs.loc[study.baseline].get(METRICS.task(task)) for task in study.tasks]
    scores = [float(s) for s in scores if s is not None and not pd.isna(s)]
    return 100 * sum(scores) / len(scores) if scores else None
