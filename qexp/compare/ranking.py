"""The ranking and the recommendations: runs ordered by average, ties kept where the tests cannot
tell runs apart, recovery against the baseline, and recommendations that claim only what was shown.
"""

from __future__ import annotations

import itertools
import math

import pandas as pd

from ..identity import calibrated
from .data import Study
from .paired import pair_stats, average_differences, compare
from .scores import display_name, summary_table
from .stats import weighted_mean_difference

__all__ = [
    "ranking", "average_tests", "recovery_table", "best_vs_others", "recommendations",
]


def ranking(study: Study, tasks: list[str] | None = None, metric: str = "acc",
            overrides: dict[str, str] | None = None, tests: pd.DataFrame | None = None) -> pd.DataFrame:
    """Runs by average, best first; runs not significantly different share a rank.

    A run's rank is 1 + the number of runs significantly better on the average (paired over
    documents, Holm across all pairs: `tests`, from `average_tests`). `vs_baseline` is the
    paired average difference to the baseline with its 95% interval, `recovery` the average
    as a fraction of the baseline's (the interval is the difference's, over the baseline's average).
    """
    summary = summary_table(study, tasks, metric, overrides)
    ranked = summary[["average"]].sort_values("average", ascending=False, na_position="last")
    tests = average_tests(study, tasks, metric, overrides) if tests is None else tests
    significant = tests[tests["significant"]]
    worse = [r.b if r.delta > 0 else r.a for r in significant.itertuples()]
    ranked.insert(0, "rank", [1 + worse.count(label) for label in ranked.index])
    if study.baseline:
        base_average = summary.loc[study.baseline, "average"]
        by_pair = _by_pair(tests)
        vs = pd.DataFrame([_pair_row(by_pair, label, study.baseline) for label in ranked.index], index=ranked.index)
        for suffix, column in (("", "delta"), ("_low", "ci_low"), ("_high", "ci_high")):
            ranked["vs_baseline" + suffix] = vs[column]
            ranked["recovery" + suffix] = 1 + vs[column] / base_average
    return ranked


def average_tests(study: Study, tasks: list[str] | None = None, metric: str = "acc",
                  overrides: dict[str, str] | None = None) -> pd.DataFrame:
    """The average difference of every pair of runs (the better average first), one Holm family."""
    summary = summary_table(study, tasks, metric, overrides)
    order = list(summary["average"].sort_values(ascending=False, na_position="last").index)
    return average_differences(study, list(itertools.combinations(order, 2)), tasks, metric, overrides)


def _by_pair(tests: pd.DataFrame) -> dict[tuple[str, str], dict]:
    """A family of tests by (a, b): built once where many pairs are looked up."""
    return {(r["a"], r["b"]): r for r in tests.to_dict("records")}


def _pair_row(tests: pd.DataFrame | dict, a: str, b: str) -> dict[str, float]:
    """The test of a - b, whichever way round the family holds it."""
    if a == b:
        return {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": math.nan, "p_adjusted": math.nan,
                "significant": False}
    rows = tests if isinstance(tests, dict) else _by_pair(tests)
    if (a, b) in rows:
        return rows[a, b]
    row = rows[b, a]
    return {**row, "delta": -row["delta"], "ci_low": -row["ci_high"], "ci_high": -row["ci_low"]}


def recovery_table(study: Study, vs_baseline: pd.DataFrame, ranked: pd.DataFrame) -> pd.DataFrame:
    """Each quantized score as a fraction of the baseline's (what llm-compressor's users quote as
    "recovery"), per task on the paired documents and for the average, with 95% intervals."""
    rows = []
    for r in vs_baseline.itertuples():
        stats = pair_stats(study, r.task, r.metric)
        paired = stats.pair(r.a, r.b) if stats is not None and r.n else None
        low = high = math.nan
        if paired and r.score_b:
            test = weighted_mean_difference([paired["n"]], [paired["sum_d"]], [paired["sum_sq"]])
            low, high = 1 + test.ci_low / r.score_b, 1 + test.ci_high / r.score_b
        rows.append({"label": r.a, "task": r.task, "recovery": r.score_a / r.score_b if r.score_b else math.nan,
                     "ci_low": low, "ci_high": high})
    if "recovery" in ranked:
        rows += [{"label": label, "task": "average", "recovery": row["recovery"], "ci_low": row["recovery_low"],
                  "ci_high": row["recovery_high"]} for label, row in ranked.iterrows() if label != study.baseline]
    return pd.DataFrame(rows, columns=["label", "task", "recovery", "ci_low", "ci_high"])


def best_vs_others(study: Study, ranked: pd.DataFrame, tasks: list[str] | None = None, metric: str = "acc",
                   overrides: dict[str, str] | None = None) -> pd.DataFrame:
    """The best quantized run by average against each other quantized run, per task (its own Holm family)."""
    quantized = [label for label in ranked.index if label != study.baseline and not pd.isna(ranked.loc[label, "average"])]
    pairs = [(quantized[0], other) for other in quantized[1:]] if quantized else []
    return compare(study, pairs, study.tasks if tasks is None else tasks, "best_vs_others", metric, overrides)


def recommendations(study: Study, ranked: pd.DataFrame, tests: pd.DataFrame, rivals: pd.DataFrame,
                    vs_baseline: pd.DataFrame) -> list[str]:
    """Recommendations that state only what the tests showed: no claim rests on a tie or a missing score."""
    quantized = [label for label in ranked.index if label != study.baseline]
    if not quantized:
        return ["No quantized runs to recommend yet."]
    complete = [label for label in quantized if not pd.isna(ranked.loc[label, "average"])]
    if not complete:
        return ["No quantized run has a score on every task, so none has an average: no recommendation."]
    best = complete[0]
    lines = ["Overall, " + _best_line(best, complete[1:], ranked, tests)]
    for r in rivals[rivals["significant"] & (rivals["winner"] != best)].itertuples():
        lines.append(f"{best} is significantly worse than {r.b} on {display_name(r.task)} "
                     f"({_points(r.delta)} points on {r.n} documents, p Holm {r.p_adjusted:.3g}).")
    if study.baseline and "vs_baseline" in ranked and pd.isna(ranked.loc[best, "vs_baseline"]):
        lines.append(f"{best} vs Baseline: not tested (a task without documents both runs scored).")
    elif study.baseline and "vs_baseline" in ranked:
        row = ranked.loc[best]
        mine = vs_baseline[vs_baseline["a"] == best]
        worse = list(mine.loc[mine["significant"] & (mine["delta"] < 0), "task"])
        lines.append(
            f"{best} vs Baseline: average {_points(row['vs_baseline'])} points "
            f"[{_points(row['vs_baseline_low'])}, {_points(row['vs_baseline_high'])}], recovery "
            f"{100 * row['recovery']:.1f}%; "
            + (f"significantly worse on {', '.join(display_name(t) for t in worse)}."
               if worse else "no task is significantly worse than the unquantized model.")
        )
    calib = study.runs.loc[complete, "calib_n"]
    sized = calib[[calibrated(study.runs.loc[label, "method"]) for label in complete]]
    if sized.nunique() > 1:
        smallest = sized.min()  # what fits that budget: its runs and the data-free ones
        budget = [label for label in complete if label not in sized.index or sized[label] == smallest]
        samples = f"{smallest} samples" + (" or none" if len(sized) < len(complete) else "")
        lines.append(f"With a limited calibration budget ({samples}): "
                     + _best_line(budget[0], budget[1:], ranked, tests, among=f"run with {samples}"))
    return lines


def _best_line(best: str, others: list[str], ranked: pd.DataFrame, tests: pd.DataFrame,
               among: str = "quantized run") -> str:
    average = f"average {ranked.loc[best, 'average']:.1%}"
    if not others:
        return f"best: {best} ({average}), the only {among}."
    by_pair = _by_pair(tests)
    tied = [o for o in others if not _pair_row(by_pair, best, o)["significant"]]
    if tied:
        names = ", ".join(tied[:8]) + (f" and {len(tied) - 8} more" if len(tied) > 8 else "")
        return (f"no single best: {best} has the highest {average}, but {names} "
                f"{'is' if len(tied) == 1 else 'are'} not significantly different on the average (paired over "
                "documents, Holm-adjusted); choose among them on cost, or evaluate more documents.")
    runner = _pair_row(by_pair, best, others[0])
    return (f"best: {best} ({average}), significantly better on the average than every other {among} "
            f"(vs the runner-up {others[0]}: {_points(runner['delta'])} points "
            f"[{_points(runner['ci_low'])}, {_points(runner['ci_high'])}], p Holm {runner['p_adjusted']:.3g}).")


def _points(fraction: float) -> str:
    return f"{round(100 * fraction, 1) + 0.0:+.1f}"  # + 0.0: no "-0.0"
