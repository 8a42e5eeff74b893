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
from .stats import (ALPHA, holm, mcnemar_p, paired_bootstrap, weighted_mean_difference,
                    weighted_mean_differences, wilson_interval)

__all__ = [
    "MMLU_CATEGORIES",
    "display_name",
    "split_metric",
    "metric_column",
    "metric_for",
    "scores",
    "summary_table",
    "compare",
    "average_differences",
    "average_tests",
    "deltas_vs_baseline",
    "mmlu_categories",
    "mmlu_subjects",
    "method_comparison",
    "calibration_comparison",
    "ranking",
    "recovery_table",
    "best_vs_others",
    "recommendations",
    "settings_warnings",
    "perplexity_table",
    "cost_table",
    "repeats_table",
    "pareto_front",
    "size_table",
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
    return f"{task}/{metric}" if filter_ == "none" else f"{task}/{metric}/{filter_}"


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


def _correctness(study: Study, task: str, spec: str) -> pd.DataFrame | None:
    metric, filter_ = split_metric(spec)
    return study.correctness(task, metric, filter_)


def scores(study: Study, tasks: list[str], metric: str = "acc", overrides: dict[str, str] | None = None) -> pd.DataFrame:
    """Long table: one row per (run, task) with the full-set score, documents and 95% Wilson interval."""
    key = ("scores", tuple(tasks), metric, tuple(sorted((overrides or {}).items())))
    if key not in study._cache:
        study._cache[key] = _scores(study, tasks, metric, overrides)
    return study._cache[key].copy()


def _scores(study: Study, tasks: list[str], metric: str, overrides: dict[str, str] | None) -> pd.DataFrame:
    rows = []
    for task in tasks:
        used = metric_for(study, task, metric, overrides)
        matrix = _correctness(study, task, used)
        counts = matrix.notna().sum().to_dict() if matrix is not None else {}
        values = study.runs.get(metric_column(task, used), pd.Series(math.nan, index=study.runs.index)).to_dict()
        logged = study.runs.get(f"{task}/n_samples", pd.Series(0, index=study.runs.index)).fillna(0).to_dict()
        for label in study.labels:
            value = values[label]
            n = int(counts.get(label) or logged[label] or 0)
            low, high = wilson_interval(value * n, n) if n and not pd.isna(value) else (math.nan, math.nan)
            rows.append({"label": label, "task": task, "metric": used, "score": value, "n": n,
                         "ci_low": low, "ci_high": high})
    frame = pd.DataFrame(rows, columns=["label", "task", "metric", "score", "n", "ci_low", "ci_high"])
    order = {label: i for i, label in enumerate(study.labels)}
    return frame.sort_values("label", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)


def summary_table(study: Study, tasks: list[str] | None = None, metric: str = "acc",
                  overrides: dict[str, str] | None = None) -> pd.DataFrame:
    """Rows: runs; columns: tasks and their unweighted Average, as fractions."""
    tasks = study.tasks if tasks is None else tasks
    long = scores(study, tasks, metric, overrides)
    wide = long.pivot(index="label", columns="task", values="score").reindex(index=study.labels, columns=tasks)
    wide["average"] = wide[tasks].mean(axis=1, skipna=False)
    return wide


def _settings_differ(study: Study, a: str, b: str, hashes: dict | None = None) -> str:
    """The evaluation settings two runs do not share: empty when their eval hashes agree (or one is unknown)."""
    hashes = hashes if hashes is not None else study.runs["eval_hash"].to_dict()
    hash_a, hash_b = hashes[a], hashes[b]
    if pd.isna(hash_a) or pd.isna(hash_b) or hash_a == hash_b:
        return ""
    mine, theirs = study.settings.get(a, {}), study.settings.get(b, {})
    names = list(dict.fromkeys([*mine, *theirs]))
    return ", ".join(n for n in names if mine.get(n) != theirs.get(n)) or "evaluation settings (eval_hash)"


class PairStats:
    """Paired sums for every pair of runs on one task, from its documents × runs matrix, at once.

    For runs r, s: `n[r, s]` documents both scored, `sums[r, s]` the sum of r's scores on them,
    `products[r, s]` the sum of r·s, `squares[r, s]` the sum of r² on them.
    """

    def __init__(self, matrix: pd.DataFrame):
        values = matrix.to_numpy(dtype=float)
        scored = ~np.isnan(values)
        x = np.where(scored, values, 0.0)
        both = scored.astype(float)
        self.index = {label: i for i, label in enumerate(matrix.columns)}
        self.n = both.T @ both
        self.sums = x.T @ both
        self.products = x.T @ x
        self.squares = (x * x).T @ both
        self.full_n = scored.sum(axis=0)
        self.binary = bool(np.all((x == 0) | (x == 1)))

    def pair(self, a: str, b: str) -> dict[str, float]:
        i, j = self.index[a], self.index[b]
        n = self.n[i, j]
        sum_a, sum_b, both = self.sums[i, j], self.sums[j, i], self.products[i, j]
        return {"n": n, "sum_a": sum_a, "sum_b": sum_b, "sum_d": sum_a - sum_b,
                "sum_sq": self.squares[i, j] + self.squares[j, i] - 2 * both,
                "a_only": sum_a - both, "b_only": sum_b - both, "full_a": self.full_n[i], "full_b": self.full_n[j]}


def _pair_stats(study: Study, task: str, spec: str) -> PairStats | None:
    key = ("pairs", task, spec)
    if key not in study._cache:
        matrix = _correctness(study, task, spec)
        study._cache[key] = PairStats(matrix) if matrix is not None else None
    return study._cache[key]


COMPARISON_COLUMNS = ["table", "a", "b", "task", "metric", "score_a", "score_b", "delta", "n", "a_only", "b_only",
                      "p_value", "p_adjusted", "significant", "winner", "settings_differ", "docs_differ"]


def compare(study: Study, pairs: list[tuple[str, str]], tasks: list[str], table: str, metric: str = "acc",
            overrides: dict[str, str] | None = None) -> pd.DataFrame:
    """Paired comparisons `a` vs `b` per task; Holm across the table's tested comparisons.

    Scores and `delta` (= a - b) are on the documents both runs scored, the documents the
    exact McNemar test uses, so the winner always agrees with the test; `docs_differ` says
    when that is fewer documents than a run's full score (in the score tables) rests on.
    With no paired documents the comparison is not tested and stays out of the Holm family.
    """
    hashes = study.runs["eval_hash"].to_dict()
    settings = {pair: _settings_differ(study, *pair, hashes=hashes) for pair in set(pairs)}
    rows = []
    for task in tasks:
        used = metric_for(study, task, metric, overrides)
        stats = _pair_stats(study, task, used)
        column = metric_column(task, used)
        full = study.runs[column].to_dict() if column in study.runs else {}
        for a, b in pairs:
            row = {"table": table, "a": a, "b": b, "task": task, "metric": used,
                   "score_a": full.get(a, math.nan), "score_b": full.get(b, math.nan),
                   "n": 0, "a_only": 0, "b_only": 0, "p_value": math.nan, "settings_differ": settings[a, b],
                   "docs_differ": ""}
            paired = stats.pair(a, b) if stats is not None and a in stats.index and b in stats.index else None
            if paired and paired["n"] > 0:
                n = int(paired["n"])
                row.update(score_a=paired["sum_a"] / n, score_b=paired["sum_b"] / n, n=n)
                if stats.binary:  # exact McNemar, computed for the whole table below
                    row.update(a_only=int(paired["a_only"]), b_only=int(paired["b_only"]), p_value=-1.0)
                else:  # a score that is not 0/1 per document: the paired z-test of its mean difference
                    row["p_value"] = weighted_mean_difference([n], [paired["sum_d"]], [paired["sum_sq"]]).p_value
                if n < max(paired["full_a"], paired["full_b"]):
                    row["docs_differ"] = (f"{n} shared documents of {int(paired['full_a'])} ({a}) and "
                                          f"{int(paired['full_b'])} ({b})")
            rows.append(row)
    frame = pd.DataFrame(rows, columns=[c for c in COMPARISON_COLUMNS if c not in ("p_adjusted", "significant", "winner")])
    mcnemar = frame["p_value"] == -1.0
    frame.loc[mcnemar, "p_value"] = mcnemar_p(frame.loc[mcnemar, "a_only"], frame.loc[mcnemar, "b_only"])
    frame["delta"] = frame["score_a"] - frame["score_b"]
    return _conclude(frame)


def _conclude(frame: pd.DataFrame) -> pd.DataFrame:
    """Holm across the tested rows, then a winner only where the adjusted p-value says so."""
    frame["p_adjusted"] = holm(frame["p_value"].to_numpy()) if len(frame) else []
    frame["significant"] = frame["p_adjusted"] < ALPHA

    def winner(r) -> str:
        if pd.isna(r.score_a) or pd.isna(r.score_b):
            return f"score missing ({r.a if pd.isna(r.score_a) else r.b})"
        if pd.isna(r.p_value):
            return "not tested (no paired documents)"
        if not r.significant:
            return "not significant"
        return r.a if r.delta > 0 else r.b

    frame["winner"] = [winner(r) for r in frame.itertuples()] if len(frame) else []
    return frame[COMPARISON_COLUMNS]


def average_differences(study: Study, pairs: list[tuple[str, str]], tasks: list[str] | None = None,
                        metric: str = "acc", overrides: dict[str, str] | None = None) -> pd.DataFrame:
    """The difference of two runs' averages over tasks, paired over documents, with a 95% interval
    and a z-test (`stats.weighted_mean_difference`); Holm across the pairs given."""
    tasks = study.tasks if tasks is None else tasks
    per_task = [_pair_stats(study, task, metric_for(study, task, metric, overrides)) for task in tasks]
    sums = {key: np.full((len(pairs), len(tasks)), np.nan) for key in ("n", "sum_d", "sum_sq")}
    for j, stats in enumerate(per_task):
        if stats is None:
            continue
        for i, (a, b) in enumerate(pairs):
            if a in stats.index and b in stats.index:
                paired = stats.pair(a, b)
                for key in sums:
                    sums[key][i, j] = paired[key]
    tests = weighted_mean_differences(sums["n"], sums["sum_d"], sums["sum_sq"])
    frame = pd.DataFrame({"a": [a for a, _ in pairs], "b": [b for _, b in pairs], "delta": tests["delta"],
                          "ci_low": tests["ci_low"], "ci_high": tests["ci_high"], "n": tests["n"].astype(int),
                          "p_value": tests["p_value"]})
    frame["p_adjusted"] = holm(frame["p_value"].to_numpy()) if len(frame) else []
    frame["significant"] = frame["p_adjusted"] < ALPHA
    return frame


def deltas_vs_baseline(study: Study, tasks: list[str] | None = None, metric: str = "acc",
                       overrides: dict[str, str] | None = None, table: str = "vs_baseline") -> pd.DataFrame:
    """Each quantized run against the baseline, per task, best first within a task."""
    if not study.baseline:
        return compare(study, [], [], table)
    tasks = study.tasks if tasks is None else tasks  # [] (no MMLU categories in the runs) means none
    pairs = [(label, study.baseline) for label in study.labels if label != study.baseline]
    frame = compare(study, pairs, tasks, table, metric, overrides)
    return frame.sort_values(["task", "delta"], ascending=[True, False], key=_task_order(tasks))


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
    for _, same in runs.groupby(["calib_n", "shared_variant"], sort=True):
        pairs += [(a, b) for a, b in itertools.combinations(sorted(same.index), 2)
                  if same.loc[a, "method"] != same.loc[b, "method"]]
    return compare(study, pairs, study.tasks if tasks is None else tasks, "methods", metric, overrides)


def calibration_comparison(study: Study, tasks: list[str] | None = None, metric: str = "acc",
                           overrides: dict[str, str] | None = None) -> pd.DataFrame:
    """Calibration sizes against each other per method (e.g. GPTQ-215 vs GPTQ-512)."""
    runs = study.runs[study.runs["method"] != "none"]
    pairs = []
    for _, same_method in runs.groupby(["method", "variant"], sort=True):
        ordered = list(same_method.sort_values("calib_n").index)
        pairs += list(itertools.combinations(ordered, 2))
    return compare(study, pairs, study.tasks if tasks is None else tasks, "calibration", metric, overrides)


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
        vs = pd.DataFrame([_pair_row(tests, label, study.baseline) for label in ranked.index], index=ranked.index)
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


def _pair_row(tests: pd.DataFrame, a: str, b: str) -> dict[str, float]:
    """The test of a - b, whichever way round the family holds it."""
    if a == b:
        return {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": math.nan, "p_adjusted": math.nan,
                "significant": False}
    row = tests[(tests.a == a) & (tests.b == b)]
    if len(row):
        return row.iloc[0].to_dict()
    row = tests[(tests.a == b) & (tests.b == a)].iloc[0].to_dict()
    return {**row, "delta": -row["delta"], "ci_low": -row["ci_high"], "ci_high": -row["ci_low"]}


def recovery_table(study: Study, vs_baseline: pd.DataFrame, ranked: pd.DataFrame) -> pd.DataFrame:
    """Each quantized score as a fraction of the baseline's (what llm-compressor's users quote as
    "recovery"), per task on the paired documents and for the average, with 95% intervals."""
    rows = []
    for r in vs_baseline.itertuples():
        stats = _pair_stats(study, r.task, r.metric)
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
    if calib.nunique() > 1:
        smallest = calib.min()
        budget = [label for label in complete if calib[label] == smallest]
        lines.append(f"With a limited calibration budget ({smallest} samples): "
                     + _best_line(budget[0], budget[1:], ranked, tests, among=f"run with {smallest} samples"))
    return lines


def _best_line(best: str, others: list[str], ranked: pd.DataFrame, tests: pd.DataFrame,
               among: str = "quantized run") -> str:
    average = f"average {ranked.loc[best, 'average']:.1%}"
    if not others:
        return f"best: {best} ({average}), the only {among}."
    tied = [o for o in others if not _pair_row(tests, best, o)["significant"]]
    if tied:
        names = ", ".join(tied[:8]) + (f" and {len(tied) - 8} more" if len(tied) > 8 else "")
        return (f"no single best: {best} has the highest {average}, but {names} "
                f"{'is' if len(tied) == 1 else 'are'} not significantly different on the average (paired over "
                "documents, Holm-adjusted); choose among them on cost, or evaluate more documents.")
    runner = _pair_row(tests, best, others[0])
    return (f"best: {best} ({average}), significantly better on the average than every other {among} "
            f"(vs the runner-up {others[0]}: {_points(runner['delta'])} points "
            f"[{_points(runner['ci_low'])}, {_points(runner['ci_high'])}], p Holm {runner['p_adjusted']:.3g}).")


def _points(fraction: float) -> str:
    return f"{round(100 * fraction, 1) + 0.0:+.1f}"  # + 0.0: no "-0.0"


def pareto_front(points: pd.DataFrame, x: str, y: str, maximize_y: bool) -> pd.Series:
    """True for the rows no other row beats: smaller `x` and better `y` (ties do not dominate)."""
    front = []
    for label, row in points.iterrows():
        if pd.isna(row[x]) or pd.isna(row[y]):
            front.append(False)
            continue
        better_y = points[y] >= row[y] if maximize_y else points[y] <= row[y]
        strictly = (points[x] < row[x]) | (points[y] > row[y] if maximize_y else points[y] < row[y])
        front.append(not bool(((points[x] <= row[x]) & better_y & strictly).any()))
    return pd.Series(front, index=points.index)


def size_table(study: Study, summary: pd.DataFrame) -> pd.DataFrame:
    """Checkpoint size against average accuracy (and held-out bits per byte), with each Pareto front."""
    size = study.runs.get("perf/checkpoint_mb", pd.Series(math.nan, index=study.runs.index))
    frame = pd.DataFrame({"checkpoint_mb": size, "average": summary["average"]}, index=study.labels)
    frame["accuracy_front"] = pareto_front(frame, "checkpoint_mb", "average", maximize_y=True)
    for task in study.perplexity_tasks:
        frame["bits_per_byte"] = study.runs.get(f"{task}/bits_per_byte")
        frame["perplexity_front"] = pareto_front(frame, "checkpoint_mb", "bits_per_byte", maximize_y=False)
        break
    return frame


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
            row = {"label": label, "task": task, "word_perplexity": run.get(f"{task}/word_perplexity", math.nan),
                   "bits_per_byte": run.get(f"{task}/bits_per_byte", math.nan),
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


COSTS = {"perf/checkpoint_mb": "checkpoint MB", "perf/compression_ratio": "compression x",
         "perf/quant_seconds": "quantize s", "perf/eval_seconds": "evaluate s",
         "perf/peak_rss_mb": "peak RSS MB", "perf/quant_peak_gpu_mb": "quantize peak GPU MB",
         "perf/eval_peak_gpu_mb": "evaluate peak GPU MB"}


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


def cost_table(study: Study) -> pd.DataFrame:
    """What each run cost: checkpoint size and compression, quantization and evaluation time, memory."""
    present = [c for c in COSTS if c in study.runs]
    return study.runs[present].rename(columns=COSTS)
