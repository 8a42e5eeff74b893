"""What a run costs and what it buys besides accuracy: held-out perplexity against the baseline,
checkpoint size against accuracy (the Pareto fronts), time and memory.
"""

from __future__ import annotations

import math

import pandas as pd

from ..contract import METRICS
from .data import Study
from .stats import ALPHA, holm, paired_bootstrap

__all__ = [
    "perplexity_table", "COSTS", "cost_table", "pareto_front", "shown_better", "size_table",
]


def perplexity_table(study: Study) -> pd.DataFrame:
    """Held-out perplexity per run (lower is better), each quantized run against the baseline.

    `delta_bits_per_byte` is the corpus figure (total bits over total bytes) on the documents
    both runs scored, `n` their number; its interval and p-value come from a paired bootstrap
    of that same figure over documents, so the sign and the verdict cannot disagree.
    """
    rows = []
    for task in study.perplexity_tasks:
        base = _loglikelihoods(study, study.baseline, task) if study.baseline else None
        for label in study.labels:
            run = study.runs.loc[label]
            mine = _loglikelihoods(study, label, task)
            row = {"label": label, "task": task, "word_perplexity": run.get(METRICS.task(task, "word_perplexity"), math.nan),
                   "bits_per_byte": run.get(METRICS.task(task, "bits_per_byte"), math.nan),
                   "n": 0 if mine is None else len(mine), "delta_bits_per_byte": math.nan,
                   "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}
            if study.baseline and label != study.baseline:
                row.update(_bits_difference(mine, base))
            rows.append(row)
    frame = pd.DataFrame(rows, columns=["label", "task", "word_perplexity", "bits_per_byte", "n",
                                        "delta_bits_per_byte", "ci_low", "ci_high", "p_value"])
    frame["p_adjusted"] = holm(frame["p_value"].to_numpy()) if len(frame) else []
    frame["significant"] = frame["p_adjusted"] < ALPHA
    return frame


def _bits_difference(mine: pd.DataFrame | None, base: pd.DataFrame | None) -> dict:
    """Corpus bits per byte, run minus baseline, on their shared documents, with a paired bootstrap."""
    if mine is None or base is None:
        return {"n": 0}
    paired = mine.join(base, how="inner", lsuffix="_a", rsuffix="_b")
    if paired.empty:
        return {"n": 0}
    nll_a, bytes_a = -paired["loglikelihood_a"].to_numpy(), paired["n_bytes_a"].to_numpy()
    nll_b, bytes_b = -paired["loglikelihood_b"].to_numpy(), paired["n_bytes_b"].to_numpy()

    def delta(index) -> float:
        return float((nll_a[index].sum() / bytes_a[index].sum() - nll_b[index].sum() / bytes_b[index].sum())
                     / math.log(2))

    low, high, p = paired_bootstrap(delta, len(paired))
    return {"n": len(paired), "delta_bits_per_byte": delta(slice(None)), "ci_low": low, "ci_high": high,
            "p_value": p}


def _loglikelihoods(study: Study, label: str, task: str) -> pd.DataFrame | None:
    """Per document: the rolling log-likelihood and the bytes it covers, indexed by document."""
    table = study.docs.get(label)
    if table is None or "loglikelihood" not in table:
        return None
    rows = table[table["task"] == task]
    return rows.set_index("doc_key")[["loglikelihood", "n_bytes"]] if len(rows) else None


COSTS = {METRICS.CHECKPOINT_MB: "checkpoint MB", METRICS.COMPRESSION_RATIO: "compression x",
         METRICS.QUANT_SECONDS: "quantize s", METRICS.EVAL_SECONDS: "evaluate s",
         METRICS.PEAK_RSS_MB: "peak RSS MB", METRICS.phase("quant", "peak_gpu_mb"): "quantize peak GPU MB",
         METRICS.phase("eval", "peak_gpu_mb"): "evaluate peak GPU MB",
         METRICS.EVAL_SERVED_PEAK_MB: "evaluate in vLLM peak MB"}


def cost_table(study: Study) -> pd.DataFrame:
    """What each run cost: checkpoint size and compression, quantization and evaluation time, memory."""
    present = [c for c in COSTS if c in study.runs]
    return study.runs[present].rename(columns=COSTS)


def pareto_front(points: pd.DataFrame, x: str, y: str, maximize_y: bool,
                 y_shown: set[tuple[str, str]] | None = None, x_spread: tuple[str, str] | None = None) -> pd.Series:
    """True for the rows no other row beats: another row beats one when it is better on one axis and worse
    on neither (smaller `x`, better `y`; ties do not beat).

    Where the figures are noisy, better means shown better. `y_shown` holds the pairs (a, b) where a's `y`
    was shown better than b's by the report's own test (Holm): then a `y` difference no test supports makes
    no run better. `x_spread` names the columns of the range of `x` over repetitions: a row is smaller on
    `x` only when its largest value is below the other's smallest, as the speed table calls a difference."""
    labels = [label for label in points.index if not (pd.isna(points.at[label, x]) or pd.isna(points.at[label, y]))]
    sign = 1 if maximize_y else -1

    def y_better(a: str, b: str) -> bool:
        if y_shown is not None:
            return (a, b) in y_shown
        return sign * (points.at[a, y] - points.at[b, y]) > 0

    def x_better(a: str, b: str) -> bool:
        if x_spread is not None:
            high, low = points.at[a, x_spread[1]], points.at[b, x_spread[0]]
            if not (pd.isna(high) or pd.isna(low)):
                return bool(high < low)
        return bool(points.at[a, x] < points.at[b, x])

    beaten = {label for label in labels for other in labels if other != label
              and (y_better(other, label) or x_better(other, label))
              and not (y_better(label, other) or x_better(label, other))}
    return pd.Series([label in labels and label not in beaten for label in points.index], index=points.index)


def shown_better(tests: pd.DataFrame) -> set[tuple[str, str]]:
    """(winner, loser) for every pair of `tests` (rows a, b, delta, significant) whose difference was shown."""
    return {(r.a, r.b) if r.delta > 0 else (r.b, r.a) for r in tests[tests["significant"]].itertuples()}


def size_table(study: Study, summary: pd.DataFrame, tests: pd.DataFrame | None = None) -> pd.DataFrame:
    """Checkpoint size against average accuracy (and held-out bits per byte), with each Pareto front. With
    `tests` (the average's, `ranking.average_tests`), an accuracy difference counts only where it was shown."""
    size = study.runs.get(METRICS.CHECKPOINT_MB, pd.Series(math.nan, index=study.runs.index))
    frame = pd.DataFrame({"checkpoint_mb": size, "average": summary["average"]}, index=study.labels)
    frame["accuracy_front"] = pareto_front(frame, "checkpoint_mb", "average", maximize_y=True,
                                           y_shown=None if tests is None else shown_better(tests))
    for task in study.perplexity_tasks:
        frame["bits_per_byte"] = study.runs.get(METRICS.task(task, "bits_per_byte"))
        frame["perplexity_front"] = pareto_front(frame, "checkpoint_mb", "bits_per_byte", maximize_y=False)
        break
    return frame
