"""What a study could have detected, and what it shows to be equivalent.

"Not significantly different" is not "the same": with 200 documents a task hides differences of
several points. For every comparison the report therefore also states

- the **minimum detectable difference** (MDE): the smallest true difference the study's test would
  have found with `power` (80% by default) at two-sided `ALPHA`, given its documents and how often
  the two runs disagreed (per task: the exact McNemar test's power, computed exactly by `mcnemar`;
  on the average over tasks: the paired z-test's, normal);
- the **documents needed** to detect a given difference (2 points by default) at that power, so a
  user sizes `eval.limit` from a pilot study (`python -m qexp.compare.plan`);
- **equivalence** within a margin (two one-sided tests, TOST) and a **one-sided lower bound** on the
  difference (hence on recovery), so "within 1 point of the baseline" is shown, not assumed.

One assumption keeps all of these honest when two runs rarely disagree: a true difference of δ
means the runs disagree on at least a share |δ| of the documents, so the variance of a paired 0/1
difference is never taken below |δ|(1 - |δ|), and the McNemar power assumes a disagreement rate
of at least |δ|. Two runs that never disagreed on 20 documents are not "equivalent" from zero
variance: that task could only have detected a difference of about 37 points.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.special import ndtr, ndtri

from .mcnemar import (MAX_DOCS, POWER, mcnemar_docs, mcnemar_docs_many, mcnemar_mde, mcnemar_mdes,
                      mcnemar_power)
from .stats import ALPHA

__all__ = ["POWER", "DIFFERENCE", "MARGIN", "RECOVERY", "MAX_DOCS", "Settings", "check_settings",
           "mcnemar_power", "mcnemar_mde", "mcnemar_mdes", "mcnemar_docs", "mcnemar_docs_many",  # (from .mcnemar)
           "PairedMean", "mean_power", "mean_mde", "mean_docs", "tost_p", "lower_bound", "upper_bound"]

DIFFERENCE = 0.02  # the difference a "how many documents" question asks about: 2 points
MARGIN = 0.01  # equivalence margin on the average: 1 point
RECOVERY = 0.95  # the recovery llm-compressor's own evaluation tests require (of a point estimate)


@dataclass(frozen=True)
class Settings:
    """What the report's power and equivalence statements are about (fractions, not points)."""

    power: float = POWER
    difference: float = DIFFERENCE
    margin: float = MARGIN
    recovery: float = RECOVERY


def check_settings(settings: Settings) -> list[str]:
    """What is wrong with `settings`, one line each with the fix (empty when they make sense)."""
    problems = []
    if not ALPHA < settings.power < 1:
        problems.append(f"--power {100 * settings.power:g}: power is a percentage between {100 * ALPHA:g} (the "
                        "test's false-positive rate) and 100, exclusive; use e.g. --power 80")
    for name, value in (("difference", settings.difference), ("margin", settings.margin)):
        if not 0 < value < 1:
            problems.append(f"--{name} {100 * value:g}: a {name} is in points of accuracy, above 0 and below 100; "
                            f"use e.g. --{name} {100 * (DIFFERENCE if name == 'difference' else MARGIN):g}")
    if not 0 < settings.recovery < 1:
        problems.append(f"--recovery {100 * settings.recovery:g}: a recovery target is a percentage of the "
                        "baseline's average above 0 and below 100; use e.g. --recovery 95")
    return problems


# ----------------------------------------------------------------------------- the average: paired z-test
@dataclass(frozen=True)
class PairedMean:
    """Pairs' paired differences over k tasks, the way `stats.weighted_mean_differences` tests their
    average: per pair (row) and task (column), `n` documents and `variance`, the sample variance of a
    document's difference; `binary` per task, whether its scores are 0/1; `delta` per pair, the
    observed average difference. Built from one pair (1-D sums) the functions below return floats;
    from many (2-D sums, a row per pair) arrays, computed for all pairs at once."""

    n: np.ndarray
    variance: np.ndarray
    binary: np.ndarray
    delta: np.ndarray
    single: bool = False

    @classmethod
    def from_sums(cls, n, sum_d, sum_sq, binary=True) -> "PairedMean":
        single = np.ndim(n) <= 1
        n, sum_d, sum_sq = (np.atleast_2d(np.asarray(x, dtype=float)) for x in (n, sum_d, sum_sq))
        safe = np.maximum(n, 1)
        means = sum_d / safe
        variance = np.where(n > 1, (sum_sq - n * means**2) / np.maximum(n - 1, 1), 1.0)  # as the test takes it
        k = n.shape[1]
        delta = means.sum(axis=1) / k if k else np.full(n.shape[0], np.nan)
        testable = (k > 0) & np.all(n > 0, axis=1) & ~np.isnan(delta)
        return cls(n, np.maximum(variance, 0.0), np.broadcast_to(np.asarray(binary, dtype=bool), n.shape[1:]),
                   np.where(testable, delta, np.nan), single)

    def se(self, delta, n=None) -> np.ndarray:
        """Each pair's standard error of the average if the runs differed by `delta` (per pair) on
        every task, floored as the module says; with the pilot's documents or `n` per task."""
        size = np.abs(np.broadcast_to(np.asarray(delta, dtype=float), self.delta.shape))[:, None]
        floor = np.where(self.binary, size * (1 - size), 0.0)
        docs = self.n if n is None else np.broadcast_to(np.asarray(n, dtype=float), self.delta.shape)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):  # untestable pairs (no documents) give NaN
            return np.sqrt(np.sum(np.maximum(self.variance, floor) / docs, axis=1)) / self.n.shape[1]

    def out(self, values: np.ndarray):
        return float(values[0]) if self.single else values


def _power_of(delta, se, alpha: float) -> np.ndarray:
    z = float(ndtri(1 - alpha / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(se > 0, np.abs(delta) / np.where(se > 0, se, 1.0), np.where(np.abs(delta) > 0, np.inf, 0.0))
    return ndtr(ratio - z) + ndtr(-ratio - z)


def mean_power(pair: PairedMean, delta, alpha: float = ALPHA, n=None):
    """Two-sided power of the paired z-test of the average at a true difference `delta`."""
    return pair.out(_power_of(delta, pair.se(delta, n), alpha))


def _bisect(reached, low, high, steps: int = 50) -> np.ndarray:
    """Per pair, the boundary in [low, high] where `reached(x)` (rising in x) turns true."""
    low, high = np.array(low, dtype=float), np.array(high, dtype=float)
    for _ in range(steps):
        middle = (low + high) / 2
        yes = reached(middle)
        low, high = np.where(yes, low, middle), np.where(yes, middle, high)
    return high


def mean_mde(pair: PairedMean, power: float = POWER, alpha: float = ALPHA):
    """The smallest average difference the paired z-test detects with `power`; NaN if untestable."""
    ones = np.ones_like(pair.delta)
    reached = lambda d: _power_of(d, pair.se(d), alpha) >= power  # noqa: E731
    mde = _bisect(reached, 0 * ones, ones)
    return pair.out(np.where(~np.isnan(pair.delta) & reached(ones), mde, np.nan))


def mean_docs(pair: PairedMean, delta: float, power: float = POWER, alpha: float = ALPHA, most: int = MAX_DOCS):
    """The fewest documents per task (every task the same) at which the average detects `delta`
    with `power`, the per-document variances taken from the pilot `pair`; NaN if untestable or
    more than `most`. Power rises with n, so this is the first whole n past the continuous root."""
    if not delta:
        return pair.out(np.full(pair.delta.shape, np.nan))
    reached = lambda n: _power_of(delta, pair.se(delta, n), alpha) >= power  # noqa: E731
    ones = np.ones_like(pair.delta)
    root = np.ceil(_bisect(reached, 0.5 * ones, most * ones, steps=60) - 1e-9)
    enough = ~np.isnan(pair.delta) & reached(most * ones)
    return pair.out(np.where(enough, np.maximum(root, 1), np.nan))


def tost_p(pair: PairedMean, margin: float):
    """The p-value of two one-sided tests that the true average difference lies within ±`margin`:
    the larger of P(as large an estimate | difference = -margin) and P(as small | +margin), each
    with the standard error at the margin. Below ALPHA: equivalent within the margin."""
    se = pair.se(margin)
    with np.errstate(divide="ignore", invalid="ignore"):
        above = 1 - ndtr((pair.delta + margin) / se)  # H0: difference <= -margin
        below = ndtr((pair.delta - margin) / se)  # H0: difference >= +margin
    p = np.where(se > 0, np.maximum(above, below), np.where(np.abs(pair.delta) < margin, 0.0, 1.0))
    return pair.out(np.where(np.isnan(pair.delta), np.nan, p))


def lower_bound(pair: PairedMean, confidence: float = 1 - ALPHA):
    """The one-sided lower confidence bound on the true average difference: the smallest d0 that a
    one-sided test of "difference <= d0" does not reject at 1 - `confidence` (test inversion, with
    the standard error at d0; -1 when none is rejected). NaN if untestable."""
    z = float(ndtri(confidence))
    delta = np.nan_to_num(pair.delta)

    def kept(d0):  # d0 is not rejected: the estimate is not too far above it
        return delta - d0 <= z * pair.se(d0)

    ones = np.ones_like(delta)
    bound = np.where(kept(-ones), -1.0, _bisect(kept, -ones, delta))
    return pair.out(np.where(np.isnan(pair.delta), np.nan, bound))


def upper_bound(pair: PairedMean, confidence: float = 1 - ALPHA):
    """The one-sided upper confidence bound on the true average difference (`lower_bound` mirrored)."""
    return -lower_bound(replace(pair, delta=-pair.delta), confidence)
