"""Paired comparisons: two runs on the documents both scored, per task, Holm across a table.

Every comparison table carries raw and Holm-adjusted p-values; `winner` names a run only
when the adjusted p-value is below ALPHA. `PairStats` gives the paired sums of every pair of
runs on one task at once, from its documents x runs matrix.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from ..contract import METRICS
from ..identity import calibrated
from .data import Study
from .mcnemar import mcnemar_docs_many, mcnemar_mdes
from .power import PairedMean, Settings, lower_bound, mean_docs, mean_mde, tost_p, upper_bound
from .scores import MMLU_CATEGORIES, task_correctness, metric_column, metric_for
from .stats import ALPHA, holm, holm_intervals, mcnemar_p, weighted_mean_difference, weighted_mean_differences

__all__ = [
    "PairStats", "pair_stats", "COMPARISON_COLUMNS", "compare", "with_power", "average_differences",
    "deltas_vs_baseline", "mmlu_categories", "mmlu_subjects", "method_comparison", "method_pairs",
    "calibration_comparison", "calibration_pairs",
]


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


def pair_stats(study: Study, task: str, spec: str) -> PairStats | None:
    key = ("pairs", task, spec)
    if key not in study._cache:
        matrix = task_correctness(study, task, spec)
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
    firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
    parts = []
    for task in tasks:  # every pair at once: a large study's tables have ~20,000 rows
        used = metric_for(study, task, metric, overrides)
        stats = pair_stats(study, task, used)
        column = metric_column(task, used)
        full = study.runs[column].to_dict() if column in study.runs else {}
        part = {"table": [table] * len(pairs), "a": firsts, "b": seconds, "task": [task] * len(pairs),
                "metric": [used] * len(pairs),
                "score_a": np.array([full.get(a, math.nan) for a in firsts], dtype=float),
                "score_b": np.array([full.get(b, math.nan) for b in seconds], dtype=float),
                "n": np.zeros(len(pairs), dtype=np.int64), "a_only": np.zeros(len(pairs), dtype=np.int64),
                "b_only": np.zeros(len(pairs), dtype=np.int64), "p_value": np.full(len(pairs), math.nan),
                "settings_differ": [settings[pair] for pair in pairs], "docs_differ": [""] * len(pairs)}
        parts.append(part)
        if stats is None:
            continue
        i, j = (np.array([stats.index.get(x, -1) for x in runs], dtype=np.int64) for runs in (firsts, seconds))
        rows = np.flatnonzero((i >= 0) & (j >= 0))
        rows = rows[stats.n[i[rows], j[rows]] > 0]  # with paired documents: tested
        i, j = i[rows], j[rows]
        n = stats.n[i, j].astype(np.int64)
        both = stats.products[i, j]
        part["n"][rows] = n
        part["score_a"][rows], part["score_b"][rows] = stats.sums[i, j] / n, stats.sums[j, i] / n
        if stats.binary:  # exact McNemar, computed for the whole table below
            part["a_only"][rows] = (stats.sums[i, j] - both).astype(np.int64)
            part["b_only"][rows] = (stats.sums[j, i] - both).astype(np.int64)
            part["p_value"][rows] = -1.0
        else:  # a score that is not 0/1 per document: the paired z-test of its mean difference
            for row in rows.tolist():
                paired = stats.pair(firsts[row], seconds[row])
                part["p_value"][row] = weighted_mean_difference([paired["n"]], [paired["sum_d"]],
                                                                [paired["sum_sq"]]).p_value
        fewer = n < np.maximum(stats.full_n[i], stats.full_n[j])
        for row, shared, full_a, full_b in zip(rows[fewer].tolist(), n[fewer].tolist(), stats.full_n[i[fewer]].tolist(),
                                               stats.full_n[j[fewer]].tolist()):
            part["docs_differ"][row] = (f"{shared} shared documents of {int(full_a)} ({firsts[row]}) and "
                                        f"{int(full_b)} ({seconds[row]})")
    names = [c for c in COMPARISON_COLUMNS if c not in ("p_adjusted", "significant", "winner", "delta")]
    frame = pd.DataFrame({c: np.concatenate([part[c] for part in parts]) if parts and isinstance(parts[0][c], np.ndarray)
                          else [x for part in parts for x in part[c]] for c in names})
    mcnemar = frame["p_value"] == -1.0
    frame.loc[mcnemar, "p_value"] = mcnemar_p(frame.loc[mcnemar, "a_only"], frame.loc[mcnemar, "b_only"])
    frame["delta"] = frame["score_a"] - frame["score_b"]
    return _conclude(frame)


def _conclude(frame: pd.DataFrame) -> pd.DataFrame:
    """Holm across the tested rows, then a winner only where the adjusted p-value says so."""
    frame["p_adjusted"] = holm(frame["p_value"].to_numpy()) if len(frame) else []
    frame["significant"] = frame["p_adjusted"] < ALPHA

    def winner(a, b, score_a, score_b, p_value, significant, delta) -> str:
        if math.isnan(score_a) or math.isnan(score_b):
            return f"score missing ({a if math.isnan(score_a) else b})"
        if math.isnan(p_value):
            return "not tested (no paired documents)"
        if not significant:
            return "not significant"
        return a if delta > 0 else b

    a, b, significant = (frame[c].tolist() for c in ("a", "b", "significant"))
    score_a, score_b, p_value, delta = (frame[c].astype(float).tolist() for c in ("score_a", "score_b", "p_value", "delta"))
    frame["winner"] = [winner(*row) for row in zip(a, b, score_a, score_b, p_value, significant, delta)]
    return frame[COMPARISON_COLUMNS]


def with_power(study: Study, frame: pd.DataFrame, settings: Settings = Settings()) -> pd.DataFrame:
    """A comparison table (`compare`) with what each row could have detected: `mde`, the smallest
    difference its test finds with `settings.power` at two-sided ALPHA (before Holm), and
    `docs_needed`, for a tested row that is not significant, the documents that would detect
    `settings.difference` (None: more than power.MAX_DOCS, or not asked). 0/1 scores: the exact
    McNemar test's power; others: the z-test's."""
    mde, needed = np.full(len(frame), math.nan), [None] * len(frame)
    exact: dict[str, list] = {"rows": [], "n": [], "share": [], "significant": []}  # 0/1 scores: McNemar
    columns = ("task", "metric", "a", "b", "n", "a_only", "b_only", "p_value", "significant")
    rows = zip(*(frame[c].tolist() for c in columns))  # plain values: a large table has ~20,000 rows
    for i, (task, metric, a, b, n, a_only, b_only, p_value, significant) in enumerate(rows):
        stats = pair_stats(study, task, metric) if n and not math.isnan(p_value) else None
        if stats is None:
            continue
        if stats.binary:
            for key, value in zip(exact, (i, n, (a_only + b_only) / n, significant)):
                exact[key].append(value)
        else:
            paired = stats.pair(a, b)
            pilot = PairedMean.from_sums([paired["n"]], [paired["sum_d"]], [paired["sum_sq"]], binary=False)
            mde[i] = mean_mde(pilot, settings.power)
            docs = math.nan if significant else mean_docs(pilot, settings.difference, settings.power)
            needed[i] = None if math.isnan(docs) else int(docs)
    # A large study repeats (documents, disagreements) within and across its tables: each distinct one
    # is searched once per study, and the searches of a table all at once.
    found, docs = study._cache.setdefault(("power", settings), ({}, {}))
    cases = sorted(set(zip(exact["n"], exact["share"])) - found.keys())
    found.update(zip(cases, mcnemar_mdes([n for n, _ in cases], [s for _, s in cases], settings.power)))
    shares = sorted({s for s, significant in zip(exact["share"], exact["significant"]) if not significant} - docs.keys())
    docs.update(zip(shares, mcnemar_docs_many(shares, settings.difference, settings.power)))
    for i, n, share, significant in zip(*exact.values()):
        mde[i] = found[n, share]
        needed[i] = None if significant else docs[share]
    return frame.assign(mde=mde, docs_needed=pd.array(needed, dtype="Int64"))


def average_differences(study: Study, pairs: list[tuple[str, str]], tasks: list[str] | None = None,
                        metric: str = "acc", overrides: dict[str, str] | None = None,
                        settings: Settings = Settings()) -> pd.DataFrame:
    """The difference of two runs' averages over tasks, paired over documents, with a 95% interval
    and a z-test (`stats.weighted_mean_difference`); Holm across the pairs given, and the interval that
    agrees with Holm's verdict (`adj_low`, `adj_high`: `stats.holm_intervals`). With each pair,
    what it could have detected (`mde`; `docs_needed` per task for `settings.difference`), its
    two one-sided tests of equivalence within ±`settings.margin` (`equivalence_p`, Holm across the
    pairs in `equivalence_adjusted`, `equivalent`) and the one-sided 95% lower bound on the
    difference and the upper one (`lower`, `upper`)."""
    tasks = study.tasks if tasks is None else tasks
    per_task = [pair_stats(study, task, metric_for(study, task, metric, overrides)) for task in tasks]
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
    columns = ("delta", "ci_low", "ci_high", "p_value", "p_adjusted")
    frame["adj_low"], frame["adj_high"] = holm_intervals(*(frame[c] for c in columns)) if len(frame) else ([], [])
    binary = [stats is None or stats.binary for stats in per_task]
    pilots = PairedMean.from_sums(sums["n"].reshape(len(pairs), len(tasks)), np.nan_to_num(sums["sum_d"]),
                                  np.nan_to_num(sums["sum_sq"]), binary)  # NaN documents: untestable pairs
    needed = mean_docs(pilots, settings.difference, settings.power)
    frame["mde"] = mean_mde(pilots, settings.power)
    frame["docs_needed"] = pd.array([None if math.isnan(x) else int(x) for x in needed], dtype="Int64")
    frame["equivalence_p"] = tost_p(pilots, settings.margin)
    frame["equivalence_adjusted"] = holm(frame["equivalence_p"].to_numpy()) if len(frame) else []
    frame["equivalent"] = frame["equivalence_adjusted"] < ALPHA
    frame["lower"] = lower_bound(pilots)
    frame["upper"] = upper_bound(pilots)
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
    present = [c for c in MMLU_CATEGORIES if METRICS.task(c) in study.runs]
    return deltas_vs_baseline(study, present, metric, table="mmlu_categories")


def mmlu_subjects(study: Study) -> pd.DataFrame:
    """Per subject: every run's score; Holm across all subject comparisons with the baseline."""
    tasks = {str(column).split("/")[0] for column in study.runs}
    subjects = sorted(t for t in tasks if t.startswith("mmlu_") and t not in MMLU_CATEGORIES and METRICS.task(t) in study.runs)
    return deltas_vs_baseline(study, subjects, "acc", table="mmlu_subjects")


def method_comparison(study: Study, tasks: list[str] | None = None, metric: str = "acc",
                      overrides: dict[str, str] | None = None) -> pd.DataFrame:
    """Every pair of methods at equal calibration size (GPTQ-215 vs AWQ-215, ...), one Holm family.
    A data-free method (RTN, FP8) is in every calibration size's comparison; each pair is tested once."""
    return compare(study, method_pairs(study), study.tasks if tasks is None else tasks, "methods", metric, overrides)


def method_pairs(study: Study) -> list[tuple[str, str]]:
    """The pairs `method_comparison` tests: runs of different methods at the same calibration size and
    calibration settings that share what methods share (`shared_variant`, e.g. the group size); a
    data-free run pairs with every run that shares its quantization settings (`shared_quant`)."""
    runs = study.runs[study.runs["method"] != "none"]
    if "shared_quant" not in runs:
        runs = runs.assign(shared_quant="")
    info = runs[["method", "calib_n", "shared_variant", "shared_quant"]].to_dict("index")
    pairs = []
    for a, b in itertools.combinations(sorted(info), 2):
        x, y = info[a], info[b]
        if x["method"] == y["method"]:
            continue
        if calibrated(x["method"]) and calibrated(y["method"]):
            paired = x["calib_n"] == y["calib_n"] and x["shared_variant"] == y["shared_variant"]
        else:
            paired = x["shared_quant"] == y["shared_quant"]
        if paired:
            pairs.append((a, b))
    return sorted(pairs, key=lambda p: (max(info[p[0]]["calib_n"], info[p[1]]["calib_n"]), p))


def calibration_comparison(study: Study, tasks: list[str] | None = None, metric: str = "acc",
                           overrides: dict[str, str] | None = None) -> pd.DataFrame:
    """Calibration sizes against each other per method (e.g. GPTQ-215 vs GPTQ-512)."""
    return compare(study, calibration_pairs(study), study.tasks if tasks is None else tasks, "calibration", metric,
                   overrides)


def calibration_pairs(study: Study) -> list[tuple[str, str]]:
    """The pairs `calibration_comparison` tests: each method's (and variant's) runs, smaller size first."""
    runs = study.runs[study.runs["method"] != "none"]
    pairs = []
    for _, same_method in runs.groupby(["method", "variant"], sort=True):
        ordered = list(same_method.sort_values("calib_n").index)
        pairs += list(itertools.combinations(ordered, 2))
    return pairs
