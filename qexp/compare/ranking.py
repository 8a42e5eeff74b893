"""The ranking and the recommendations: runs ordered by average, each rank 1 + the runs shown better,
letters grouping the runs the tests cannot tell apart, recovery against the baseline, and recommendations
that claim only what was shown, in three kinds of sentence: "worse" (or "better": significant after
Holm), "not shown to differ (could have detected >= X points)", and "equivalent within +-M points"
(two one-sided tests).
"""

from __future__ import annotations

import itertools
import math

import pandas as pd

from ..identity import calibrated
from .data import Study
from .paired import pair_stats, average_differences, compare
from .power import Settings
from .scores import display_name, summary_table
from .stats import weighted_mean_difference

__all__ = [
    "ranking", "letter_groups", "average_tests", "recovery_table", "best_vs_others", "recommendations", "verdict",
]


def ranking(study: Study, tasks: list[str] | None = None, metric: str = "acc",
            overrides: dict[str, str] | None = None, tests: pd.DataFrame | None = None,
            settings: Settings = Settings()) -> pd.DataFrame:
    """Runs by average, best first, with their rank and letter groups.

    A run's rank is 1 + the number of runs significantly better on the average (paired over
    documents, Holm across all pairs: `tests`, from `average_tests`); `groups` holds its letters:
    two runs share a letter exactly when they are not shown to differ (`letter_groups`), so two
    runs of different ranks that share a letter are, in the report's words, not shown to differ.
    `vs_baseline` is the paired average difference to the baseline with its 95% interval (and
    `vs_baseline_adj_low/high`, the interval that agrees with Holm's verdict), `recovery` the average
    as a fraction of the baseline's (the interval is the difference's, over the baseline's average);
    `recovery_bound` its one-sided 95% lower bound, `mde_vs_baseline` the smallest average difference
    that comparison could have detected, `equivalent` whether it shows the run within ±margin.
    """
    summary = summary_table(study, tasks, metric, overrides)
    ranked = summary[["average"]].sort_values("average", ascending=False, na_position="last")
    tests = average_tests(study, tasks, metric, overrides, settings) if tests is None else tests
    significant = tests[tests["significant"]]
    worse = [r.b if r.delta > 0 else r.a for r in significant.itertuples()]
    ranked.insert(0, "rank", [1 + worse.count(label) for label in ranked.index])
    apart = {frozenset((r.a, r.b)) for r in significant.itertuples()}
    letters = letter_groups(list(ranked.index), apart)
    joiner = "" if all(len(x) == 1 for run in letters for x in run) else " "  # past z: "a ab"
    ranked.insert(1, "groups", [joiner.join(run) for run in letters])
    if study.baseline:
        base_average = summary.loc[study.baseline, "average"]
        by_pair = _by_pair(tests)
        vs = pd.DataFrame([_pair_row(by_pair, label, study.baseline) for label in ranked.index], index=ranked.index)
        for suffix, column in (("", "delta"), ("_low", "ci_low"), ("_high", "ci_high")):
            ranked["vs_baseline" + suffix] = vs[column]
            ranked["recovery" + suffix] = 1 + vs[column] / base_average
        ranked["vs_baseline_adj_low"], ranked["vs_baseline_adj_high"] = vs["adj_low"], vs["adj_high"]
        ranked["recovery_bound"] = 1 + vs["lower"] / base_average
        ranked["mde_vs_baseline"] = vs["mde"]
        ranked["significant"] = vs["significant"].astype(bool)
        ranked["equivalent"] = vs["equivalent"].astype(bool)
        ranked["equivalence_p"] = vs["equivalence_adjusted"]
    return ranked


def letter_groups(labels: list[str], apart: set[frozenset[str]]) -> list[list[str]]:
    """A compact letter display: letters per run such that two runs share a letter exactly when they are not
    in `apart` (shown to differ). Piepho's insert-and-absorb (2004): start with one group of every run; for
    each pair shown apart, split each group holding both into one without either; drop a group inside another.
    Letters follow `labels`' order (best first: `a` is the best run's)."""
    index = {label: i for i, label in enumerate(labels)}
    groups = [(1 << len(labels)) - 1]  # bit i: labels[i] is in the group
    for pair in sorted(apart, key=lambda p: sorted(index[x] for x in p)):
        i, j = (1 << index[x] for x in pair)
        kept = [g for g in groups if not (g & i and g & j)]
        new = {part for g in groups if g & i and g & j for part in (g & ~i, g & ~j)}
        # Absorb: a new group inside another is dropped (the kept ones were maximal among themselves).
        new = [g for g in new if g and not any(g | h == h and g != h for h in new)
               and not any(g | h == h for h in kept)]
        groups = kept + new
    lowest = [min(b for b in range(len(labels)) if g >> b & 1) for g in groups]
    groups = [g for _, g in sorted(zip(lowest, groups))]
    letters = [_letter(n) for n in range(len(groups))]
    return [[letters[n] for n, g in enumerate(groups) if g >> i & 1] for i in range(len(labels))]


def _letter(n: int) -> str:
    """a..z, then aa, ab, ...: letters enough for any number of groups."""
    return _letter(n // 26 - 1) + chr(97 + n % 26) if n >= 26 else chr(97 + n)


def average_tests(study: Study, tasks: list[str] | None = None, metric: str = "acc",
                  overrides: dict[str, str] | None = None, settings: Settings = Settings()) -> pd.DataFrame:
    """The average difference of every pair of runs (the better average first), one Holm family."""
    summary = summary_table(study, tasks, metric, overrides)
    order = list(summary["average"].sort_values(ascending=False, na_position="last").index)
    return average_differences(study, list(itertools.combinations(order, 2)), tasks, metric, overrides, settings)


def _by_pair(tests: pd.DataFrame) -> dict[tuple[str, str], dict]:
    """A family of tests by (a, b): built once where many pairs are looked up."""
    return {(r["a"], r["b"]): r for r in tests.to_dict("records")}


def _pair_row(tests: pd.DataFrame | dict, a: str, b: str) -> dict[str, float]:
    """The test of a - b, whichever way round the family holds it."""
    if a == b:
        return {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0, "adj_low": 0.0, "adj_high": 0.0, "p_value": math.nan, "p_adjusted": math.nan,
                "significant": False, "lower": 0.0, "upper": 0.0, "mde": math.nan, "equivalent": False,
                "equivalence_adjusted": math.nan}
    rows = tests if isinstance(tests, dict) else _by_pair(tests)
    if (a, b) in rows:
        return rows[a, b]
    row = rows[b, a]
    return {**row, "delta": -row["delta"], "ci_low": -row["ci_high"], "ci_high": -row["ci_low"],
            "adj_low": -row["adj_high"], "adj_high": -row["adj_low"], "lower": -row["upper"], "upper": -row["lower"]}


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
                    vs_baseline: pd.DataFrame, settings: Settings = Settings()) -> list[str]:
    """Recommendations that state only what the tests showed: no claim rests on a tie or a missing
    score, and no run is called best without saying whether it keeps the baseline's accuracy."""
    quantized = [label for label in ranked.index if label != study.baseline]
    if not quantized:
        return ["No quantized runs to recommend yet."]
    complete = [label for label in quantized if not pd.isna(ranked.loc[label, "average"])]
    if not complete:
        return ["No quantized run has a score on every task, so none has an average: no recommendation."]
    best = complete[0]
    by_pair = _by_pair(tests)
    lines = ["Overall, " + _best_line(best, complete[1:], ranked, by_pair) + _against_baseline(study, best, by_pair,
                                                                                                   settings)]
    for r in rivals[rivals["significant"] & (rivals["winner"] != best)].itertuples():
        lines.append(f"{best} is significantly worse than {r.b} on {display_name(r.task)} "
                     f"({_points(r.delta)} points on {r.n} documents, p Holm {r.p_adjusted:.3g}).")
    if study.baseline and "vs_baseline" in ranked and not pd.isna(ranked.loc[best, "vs_baseline"]):
        row = ranked.loc[best]
        mine = vs_baseline[vs_baseline["a"] == best]
        worse = list(mine.loc[mine["significant"] & (mine["delta"] < 0), "task"])
        target = f"{100 * settings.recovery:g}%"
        shown = (f"so it keeps at least {target} of the baseline's average" if row["recovery_bound"] >= settings.recovery
                 else f"so this study cannot show it keeps {target}")
        lines.append(
            f"{best} vs Baseline: average {_points(row['vs_baseline'])} points "
            f"[{_points(row['vs_baseline_adj_low'])}, {_points(row['vs_baseline_adj_high'])}] (Holm-adjusted), "
            f"recovery {100 * row['recovery']:.1f}%, at least {100 * row['recovery_bound']:.1f}% "
            f"(one-sided 95% bound, unadjusted), {shown}; "
            + (f"worse on {', '.join(display_name(t) for t in worse)} (significant after Holm)."
               if worse else "no task is significantly worse than the unquantized model.")
        )
    calib = study.runs.loc[complete, "calib_n"]
    sized = calib[[calibrated(study.runs.loc[label, "method"]) for label in complete]]
    if sized.nunique() > 1:
        smallest = sized.min()  # what fits that budget: its runs and the data-free ones
        budget = [label for label in complete if label not in sized.index or sized[label] == smallest]
        samples = f"{smallest} samples" + (" or none" if len(sized) < len(complete) else "")
        lines.append(f"With a limited calibration budget ({samples}): "
                     + _best_line(budget[0], budget[1:], ranked, by_pair, among=f"run with {samples}")
                     + _against_baseline(study, budget[0], by_pair, settings))
    return lines


def verdict(row: dict, margin: float) -> str:
    """A difference a - b (a row of `average_tests`, oriented by `_pair_row`) in the report's words, with the
    interval that agrees with the Holm verdict (`adj_low`, `adj_high`)."""
    interval = f"{_points(row['delta'])} points [{_points(row['adj_low'])}, {_points(row['adj_high'])}]"
    within = f"equivalent within ±{_amount(margin)}"
    if pd.isna(row["p_value"]):
        return "not tested (a task without documents both runs scored)"
    if row["significant"]:
        return (f"{'worse' if row['delta'] < 0 else 'better'} ({interval}, p Holm {row['p_adjusted']:.3g})"
                + (f", though {within}" if row["equivalent"] else ""))
    if row["equivalent"]:
        return f"{within} ({interval}; two one-sided tests, p Holm {row['equivalence_adjusted']:.3g})"
    detectable = ("too few documents to detect any difference" if pd.isna(row["mde"])
                  else f"could have detected ≥ {100 * row['mde']:.1f} points")
    return f"not shown to differ ({interval}; {detectable}), nor shown {within}"


def _against_baseline(study: Study, label: str, by_pair: dict, settings: Settings) -> str:
    """' Against Baseline, X is ...': whether `label` keeps the baseline's accuracy on the average."""
    if not study.baseline:
        return f" No Baseline run: whether {label} keeps the unquantized accuracy is unknown."
    return f" Against Baseline, {label} is {verdict(_pair_row(by_pair, label, study.baseline), settings.margin)}."


def _best_line(best: str, others: list[str], ranked: pd.DataFrame, by_pair: dict, among: str = "quantized run") -> str:
    average = f"average {ranked.loc[best, 'average']:.1%}"
    if not others:
        return f"best: {best} ({average}), the only {among}."
    tied = [o for o in others if not _pair_row(by_pair, best, o)["significant"]]
    if tied:
        names = ", ".join(tied[:8]) + (f" and {len(tied) - 8} more" if len(tied) > 8 else "")
        detectable = [_pair_row(by_pair, best, o)["mde"] for o in tied]
        could = ("; too few documents to detect any difference" if all(pd.isna(d) for d in detectable) else
                 f"; each could have detected ≥ {100 * max(d for d in detectable if not pd.isna(d)):.1f} points")
        return (f"no single best: {best} has the highest {average}, but {names} "
                f"{'is' if len(tied) == 1 else 'are'} not shown to differ on the average (paired over "
                f"documents, Holm-adjusted{could}); choose among them on cost, or evaluate more documents "
                "(python -m qexp.compare.plan says how many).")
    runner = _pair_row(by_pair, best, others[0])
    return (f"best: {best} ({average}), better on the average than every other {among} "
            f"(vs the runner-up {others[0]}: {_points(runner['delta'])} points "
            f"[{_points(runner['adj_low'])}, {_points(runner['adj_high'])}], p Holm {runner['p_adjusted']:.3g}).")


def _amount(fraction: float) -> str:
    """'1 point', '0.5 points'."""
    return f"{100 * fraction:g} point" + ("" if round(100 * fraction, 9) == 1 else "s")


def _points(fraction: float) -> str:
    return f"{round(100 * fraction, 1) + 0.0:+.1f}"  # + 0.0: no "-0.0"
