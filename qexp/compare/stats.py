"""The statistics behind every claim in the report: intervals, paired tests, multiplicity.

With 50 documents per task a 6-point difference is within noise, so a difference between
two runs is tested on the documents both answered (exact McNemar), p-values in one table
are Holm-adjusted, and a winner is declared only below `ALPHA` after adjustment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import bdtr, ndtr, ndtri  # the distributions' functions, without scipy.stats' import (~1.5 s)

__all__ = ["ALPHA", "wilson_interval", "wilson_intervals", "mcnemar_exact", "mcnemar_p", "holm", "PairedTest",
           "MeanDifference", "weighted_mean_difference", "weighted_mean_differences", "holm_intervals", "paired_bootstrap"]

ALPHA = 0.05


def wilson_interval(correct: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion: sane at 0%, 100% and small n (unlike mean ± 1.96·se)."""
    low, high = wilson_intervals([correct], [n], confidence)
    return float(low[0]), float(high[0])


def wilson_intervals(correct, n, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """`wilson_interval` of many proportions at once: NaN where n is 0 or the count is missing."""
    correct, n = np.asarray(correct, dtype=float), np.asarray(n, dtype=float)
    z = float(ndtri(0.5 + confidence / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = correct / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    known = (n > 0) & ~np.isnan(p)
    return (np.where(known, np.maximum(0.0, centre - half), math.nan),
            np.where(known, np.minimum(1.0, centre + half), math.nan))


def holm_intervals(delta, ci_low, ci_high, p_value, p_adjusted, confidence: float = 0.95
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Normal intervals that agree with Holm's verdicts: each at the level its own step of Holm used.

    Holm rejects a hypothesis when its adjusted p is below alpha, i.e. when its raw p is below
    alpha * p / p_adjusted (alpha / m for the smallest p, more lenient further down). The interval at that
    level, from the same z-test as `ci_low, ci_high` (at `confidence`), excludes 0 exactly when Holm
    rejects. Each is at least as wide as the unadjusted one and at most as wide as Bonferroni's (alpha / m).
    """
    delta, low, high, p, adjusted = (np.asarray(x, dtype=float) for x in (delta, ci_low, ci_high, p_value,
                                                                          p_adjusted))
    alpha = 1 - confidence
    z = float(ndtri(1 - alpha / 2))
    se = (high - low) / (2 * z)
    m = max(int(np.sum(~np.isnan(p))), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        level = np.where((adjusted > 0) & (p > 0), alpha * p / adjusted, alpha / m)  # a p of 0: Bonferroni's
    half = ndtri(1 - np.clip(level, 1e-300, 1.0) / 2) * se
    return delta - half, delta + half


@dataclass(frozen=True)
class PairedTest:
    n: int  # paired documents
    a_only: int  # documents run A got right and run B wrong
    b_only: int
    p_value: float

    @property
    def discordant(self) -> int:
        return self.a_only + self.b_only


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> PairedTest:
    """Exact McNemar test: two-sided binomial test on the discordant pairs; p = 1 when there are none.

    `a` and `b` are per-document correctness (0/1) of two runs on the same documents, in the same order.
    """
    from scipy.stats import binomtest  # the reference implementation; mcnemar_p is what the report uses

    a, b = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    if a.shape != b.shape:
        raise ValueError("mcnemar_exact needs paired vectors of equal length")
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = a_only + b_only
    p = 1.0 if discordant == 0 else float(binomtest(a_only, discordant, 0.5).pvalue)
    return PairedTest(n=int(a.size), a_only=a_only, b_only=b_only, p_value=min(1.0, p))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment; NaN entries (untested pairs) stay NaN and do not count."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = tested.size
    running = 0.0
    for rank, index in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def mcnemar_p(a_only, b_only) -> np.ndarray:
    """The exact McNemar p-value for many pairs at once: 2 * P(X <= min(a_only, b_only)), X ~ Bin(discordant, 1/2).

    Equal to `mcnemar_exact` (scipy's two-sided binomtest is symmetric at p = 1/2); 1 with no discordant pairs.
    """
    a_only, b_only = np.asarray(a_only, dtype=np.int64), np.asarray(b_only, dtype=np.int64)
    discordant = a_only + b_only
    p = 2 * bdtr(np.minimum(a_only, b_only), discordant, 0.5)  # the binomial CDF
    return np.where(discordant > 0, np.minimum(1.0, p), 1.0)


@dataclass(frozen=True)
class MeanDifference:
    delta: float  # the weighted mean of the paired per-document differences
    ci_low: float
    ci_high: float
    p_value: float
    n: int  # paired documents


def weighted_mean_difference(n, sum_d, sum_sq, confidence: float = 0.95) -> MeanDifference:
    """The difference of two runs' averages over tasks, from per-task sums of paired differences.

    Per task: `n` documents both runs scored, `sum_d` the sum of their differences (a - b),
    `sum_sq` the sum of squared differences. Each task weighs 1/len(n), as in the unweighted
    average of task scores; within a task each document weighs the same. The standard error
    adds the tasks' variances of the mean (independent documents; a task of one document counts
    with the largest variance, 1); the interval is normal and the p-value the matching z-test, so
    the interval excludes 0 exactly when p < 1 - confidence.
    """
    rows = weighted_mean_differences(np.atleast_2d(n), np.atleast_2d(sum_d), np.atleast_2d(sum_sq), confidence)
    return MeanDifference(*(float(rows[key][0]) for key in ("delta", "ci_low", "ci_high", "p_value")),
                          n=int(rows["n"][0]))


def weighted_mean_differences(n, sum_d, sum_sq, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """`weighted_mean_difference` for many pairs at once: one row per pair, one column per task (and
    `se`, the standard error the interval and the p-value are built from)."""
    n, sum_d, sum_sq = (np.asarray(x, dtype=float) for x in (n, sum_d, sum_sq))
    pairs, k = n.shape
    out = {key: np.full(pairs, np.nan) for key in ("delta", "se", "ci_low", "ci_high", "p_value")}
    out["n"] = np.nansum(n, axis=1) if k else np.zeros(pairs)
    if k == 0:
        return out
    ok = np.all(n > 0, axis=1) & np.all(~np.isnan(sum_d), axis=1)
    safe_n = np.where(n > 0, n, 1.0)
    means = sum_d / safe_n
    # One document gives no variance: take the largest a paired difference of scores in [0, 1] can
    # have (1), rather than none, which would make a single document "significant".
    sample_var = np.where(n > 1, (sum_sq - n * means**2) / np.maximum(n - 1, 1), 1.0)
    variance = np.sum(np.maximum(sample_var, 0.0) / safe_n, axis=1) / k**2
    delta = means.sum(axis=1) / k
    se = np.sqrt(variance)
    z = float(ndtri(0.5 + confidence / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(se > 1e-9, 2 * ndtr(-np.abs(delta) / np.where(se > 1e-9, se, 1.0)),
                     np.where(np.abs(delta) < 1e-12, 1.0, 0.0))
    out["delta"] = np.where(ok, delta, np.nan)
    out["se"] = np.where(ok, se, np.nan)
    out["ci_low"] = np.where(ok, delta - z * se, np.nan)
    out["ci_high"] = np.where(ok, delta + z * se, np.nan)
    out["p_value"] = np.where(ok, p, np.nan)
    return out


def paired_bootstrap(statistic, n: int, replicates: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> tuple[float, float, float]:
    """(ci_low, ci_high, p) for `statistic(indices)` under resampling of `n` paired documents.

    The p-value is the two-sided bootstrap p: twice the smaller share of replicates on
    either side of zero, so it is below 1 - confidence exactly when the interval excludes 0
    (up to the replicates' resolution).
    """
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(replicates)])
    low, high = np.quantile(values, [0.5 - confidence / 2, 0.5 + confidence / 2])
    p = min(1.0, 2 * min(np.mean(values <= 0), np.mean(values >= 0)))
    return float(low), float(high), float(p)
