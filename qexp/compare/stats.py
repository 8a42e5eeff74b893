"""The statistics behind every claim in the report: intervals, paired tests, multiplicity.

With 50 documents per task a 6-point difference is within noise, so a difference between
two runs is tested on the documents both answered (exact McNemar), p-values in one table
are Holm-adjusted, and a winner is declared only below `ALPHA` after adjustment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, norm

__all__ = ["ALPHA", "wilson_interval", "mcnemar_exact", "holm", "PairedTest"]

ALPHA = 0.05


def wilson_interval(correct: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion: sane at 0%, 100% and small n (unlike mean ± 1.96·se)."""
    if n <= 0:
        return (math.nan, math.nan)
    z = norm.ppf(0.5 + confidence / 2)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


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
