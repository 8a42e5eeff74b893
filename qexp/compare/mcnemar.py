"""The exact McNemar test's power on one task, and what it detects: for many cases at once.

`mcnemar_power` is the probability that the test (`stats.mcnemar_p`) rejects at two-sided `alpha`
when two runs truly differ by a given difference; `mcnemar_mde` the smallest difference it detects
with a given power; `mcnemar_docs` the fewest documents that detect a given difference. The report
asks these of every comparison of a large study, so each has a form that takes many cases at once
(`mcnemar_mdes`, `mcnemar_docs_many`): the cases' searches take their steps together, and each step
computes every case's power in one pass of array arithmetic (`_powers`). `power` states the
assumptions and uses these figures.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import bdtr, gammaln, ndtri

from .stats import ALPHA

__all__ = ["POWER", "MAX_DOCS", "PRECISION", "mcnemar_power", "mcnemar_mde", "mcnemar_mdes", "mcnemar_docs",
           "mcnemar_docs_many"]

POWER = 0.8  # the usual target power
MAX_DOCS = 100_000  # beyond this, "more than" (no benchmark qexp runs has more documents per task)


_CRITICAL: dict[float, np.ndarray] = {}


def _critical(n: int, alpha: float) -> np.ndarray:
    """c[D] for D = 0..n: the largest count k with 2 * P(Bin(D, 1/2) <= k) < alpha (-1 if none).

    The exact McNemar test (`stats.mcnemar_p`) on D discordant documents rejects exactly when the
    smaller of the two one-sided counts is at most c[D]. c never falls and rises by at most one per
    step, so it is built in one pass (and kept, grown on to twice the size asked when it is too short).
    """
    known = _CRITICAL.get(alpha, np.zeros(0, dtype=np.int64))
    if len(known) <= n:
        c = np.concatenate([known, np.empty(max(2 * n, 256) + 1 - len(known), dtype=np.int64)])
        k = int(known[-1]) if len(known) else -1
        for d in range(len(known), len(c)):  # on from where the kept table ends
            while k + 1 <= d and 2 * bdtr(k + 1, d, 0.5) < alpha:
                k += 1
            c[d] = k
        known = _CRITICAL[alpha] = c
    return known[: n + 1]


_LOG_FACTORIAL = np.zeros(0)


def _log_factorial(n: int) -> np.ndarray:
    """log k! = gammaln(k + 1) for k = 0..n at least: one table, grown like `_critical`'s."""
    global _LOG_FACTORIAL
    if len(_LOG_FACTORIAL) <= n:
        _LOG_FACTORIAL = gammaln(np.arange(max(2 * n, 1024) + 1) + 1.0)
    return _LOG_FACTORIAL


def _binomial(x: np.ndarray, m: np.ndarray, p: np.ndarray, log_factorial: np.ndarray) -> np.ndarray:
    """P(Bin(m, p) = x), elementwise, for 0 < p < 1."""
    return np.exp(log_factorial[m] - log_factorial[x] - log_factorial[m - x] + x * np.log(p) + (m - x) * np.log1p(-p))


def _powers(n: np.ndarray, share: np.ndarray, favour: np.ndarray, alpha: float,
            known: "_Rejections | None" = None) -> np.ndarray:
    """`mcnemar_power` for many cases at once: n documents, a share of them discordant, each
    favouring the better run with probability `favour` (arrays of one length; a row per case).

    Power = sum over D of P(D discordant documents) x P(the test rejects | D). D ~ Bin(n, share) is
    summed where it carries probability: within 12 standard deviations of n * share (beyond: < 1e-30).
    Given D, with X ~ Bin(D, favour) the documents favouring the better run, the test rejects when
    X <= c[D] (the worse run "wins") or X >= D - c[D]. Both tails come from one binomial CDF (`bdtr`)
    at the first D that can reject, then from D to D + 1 by the exact recurrences
    P(X' <= k) = P(X <= k) - f P(X = k) and P(X' >= j) = P(X >= j) + f P(X = j - 1), X' ~ Bin(D + 1, f),
    plus one term where c moves: a few exponentials per D instead of two incomplete beta functions.
    `known`: P(the test rejects | D) already computed for these cases (`_Rejections`), where it covers D.
    """
    n, share, favour = (np.asarray(x) for x in (n, share, favour))
    out = np.zeros(len(n))
    live = np.flatnonzero((n >= 1) & (share > 0))
    n, share, favour = n[live].astype(np.int64), share[live].astype(float), favour[live].astype(float)
    low, high = _window(n, share)
    for part in _groups(high - low + 1):
        out[live[part]] = _padded_powers(n[part], share[part], favour[part], low[part], high[part], alpha,
                                         None if known is None else known.rows(live[part]))
    return out


def _window(n: np.ndarray, share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The counts D that carry probability when D ~ Bin(n, share): within 12 standard deviations of
    n * share (beyond: < 1e-30), from `low` to `high`."""
    spread = 12 * np.sqrt(n * share * (1 - share)) + 12
    low = np.maximum(0, np.floor(n * share - spread)).astype(np.int64)
    return low, np.minimum(n, np.ceil(n * share + spread)).astype(np.int64)


def _groups(width: np.ndarray, cells: float = 1e6):
    """Row numbers in groups of similar `width` (a padded row is as wide as the widest of its group),
    about `cells` cells at a time."""
    size = np.ceil(np.log2(np.maximum(width, 1))).astype(int)
    for bits in np.unique(size):
        same = np.flatnonzero(size == bits)
        yield from np.array_split(same, math.ceil(len(same) * 2.0**bits / cells))


def _padded_rows(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A row of the counts low..high per case, padded with its last count, and where it is not padding."""
    d = low[:, None] + np.arange(int((high - low).max()) + 1)
    inside = d <= high[:, None]
    return np.minimum(d, high[:, None]), inside


@dataclass
class _Rejections:
    """P(the test rejects | D) kept for each case over a range of D, so that a search over n for a
    fixed share and favour computes it once: case i holds D = first[i] .. first[i] + size[i] - 1 at
    flat[start[i]:]."""

    first: np.ndarray
    size: np.ndarray
    start: np.ndarray
    flat: np.ndarray

    @classmethod
    def over(cls, low, high, favour, alpha: float) -> "_Rejections":
        size = high - low + 1
        start = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
        flat = np.empty(int(size.sum()))
        for part in _groups(size):
            d, inside = _padded_rows(low[part], high[part])
            flat[(start[part][:, None] + d - low[part][:, None])[inside]] = _rejection(d, favour[part], alpha)[inside]
        return cls(low, size, start, flat)

    def rows(self, which: np.ndarray) -> "_Rejections":
        return _Rejections(self.first[which], self.size[which], self.start[which], self.flat)


def _padded_powers(n, share, favour, low, high, alpha: float, known: _Rejections | None) -> np.ndarray:
    d, inside = _padded_rows(low, high)
    log_factorial = _log_factorial(int(n.max()))
    certain = share >= 1  # every document discordant: D = n
    p = np.where(certain, 0.5, share)[:, None]
    weight = np.where(inside, np.where(certain[:, None], d == n[:, None], _binomial(d, n[:, None], p, log_factorial)), 0.0)
    if known is None:
        return np.clip(np.sum(weight * _rejection(d, favour, alpha), axis=1), 0.0, 1.0)
    offset = d - known.first[:, None]
    kept = np.all((offset >= 0) & (offset < known.size[:, None]) | ~inside, axis=1)
    rejection = np.empty(d.shape)
    rejection[kept] = known.flat[known.start[kept, None] + np.clip(offset[kept], 0, known.size[kept, None] - 1)]
    if not kept.all():  # a search that went beyond the counts kept for it
        rejection[~kept] = _rejection(d[~kept], favour[~kept], alpha)
    return np.clip(np.sum(weight * rejection, axis=1), 0.0, 1.0)


def _rejection(d: np.ndarray, favour: np.ndarray, alpha: float) -> np.ndarray:
    """P(the test rejects | D) for each row of consecutive counts D in `d`, one `favour` per row."""
    c = _critical(int(d.max()), alpha)[d]
    valid = c >= 0  # c never falls as D rises: a row is valid from its first valid count on
    if not valid.any():
        return np.zeros(d.shape)
    sure = favour >= 1  # every discordant document favours the better run: X = D
    f = np.where(sure, 0.5, favour)[:, None]
    log_factorial = _log_factorial(int(d.max()) + 1)
    k = np.maximum(c, 0)  # reject when X <= k ...
    j = d - k  # ... or X >= j (c < D/2 for alpha < 1)
    m, k0, j0 = d[:, :-1], k[:, :-1], j[:, :-1]
    rises = k[:, 1:] > k0  # c moves up by one from D to D + 1
    at_k, below_j = _binomial(k0, m, f, log_factorial), _binomial(j0 - 1, m, f, log_factorial)
    # P(X' = k + 1) = P(X = k) f (D + 1) / (k + 1) and P(X' = j) = P(X = j - 1) f (D + 1) / j
    steps_low = np.where(rises, at_k * f * (m + 1) / (k0 + 1), 0.0) - f * at_k
    steps_high = f * below_j - np.where(rises, 0.0, below_j * f * (m + 1) / np.maximum(j0, 1))  # (j = 0: no test)
    rows = np.arange(len(d))
    first = np.argmax(valid, axis=1)  # the first count that can reject (any, for a row with none)
    start_d, start_k, start_j = d[rows, first], k[rows, first], j[rows, first]
    tails = []
    for start, steps in ((bdtr(start_k, start_d, f[:, 0]), steps_low), (1 - bdtr(start_j - 1, start_d, f[:, 0]), steps_high)):
        walked = np.concatenate([np.zeros((len(d), 1)), np.cumsum(steps, axis=1)], axis=1)
        tails.append(np.clip(start[:, None] + walked - walked[rows, first][:, None], 0.0, 1.0))
    return np.where(valid, np.where(sure[:, None], 1.0, tails[0] + tails[1]), 0.0)


def _split(discordance, delta) -> tuple[np.ndarray, np.ndarray]:
    """The share of discordant documents, max(`discordance`, |delta|) (at most 1), and how often one
    of them favours the better run, (share + |delta|) / (2 share); elementwise."""
    delta = np.abs(np.asarray(delta, dtype=float))
    share = np.minimum(1.0, np.maximum(np.asarray(discordance, dtype=float), delta))
    with np.errstate(divide="ignore", invalid="ignore"):
        favour = np.where(share > 0, np.minimum(1.0, (share + delta) / (2 * share)), 0.5)
    return share, favour


def mcnemar_power(n: int, discordance: float, delta: float, alpha: float = ALPHA) -> float:
    """The probability that the exact McNemar test on `n` paired documents rejects at `alpha`
    (two-sided) when the runs truly differ by `delta` (a fraction) and disagree on a share
    max(`discordance`, |delta|) of the documents: D ~ Bin(n, that share) discordant documents,
    each favouring the better run with probability (share + |delta|) / (2 share)."""
    share, favour = _split([float(discordance)], [float(delta)])
    return float(_powers(np.array([int(n)]), share, favour, alpha)[0])


PRECISION = 1e-4  # of a smallest detectable difference: a hundredth of a point (the report shows tenths)


def _normal_mde(n: int, discordance: float, power: float, alpha: float) -> float:
    """The normal approximation to `mcnemar_mde` (Connor 1987, solved for the difference): a guess."""
    z_alpha, z_power = float(ndtri(1 - alpha / 2)), float(ndtri(power))
    low, high = 0.0, 1.0
    for _ in range(30):
        delta = (low + high) / 2
        share = max(discordance, delta)
        reached = delta * math.sqrt(n) >= z_alpha * math.sqrt(share) + z_power * math.sqrt(max(share - delta**2, 0))
        low, high = (low, delta) if reached else (delta, high)
    return high


def mcnemar_mdes(n, discordance, power: float = POWER, alpha: float = ALPHA) -> np.ndarray:
    """`mcnemar_mde` for many (documents, share of them discordant) at once: one bisection per case,
    all taking their steps together, so each step computes every case's power in one pass."""
    n = np.asarray(n, dtype=float).astype(np.int64)
    discordance = np.asarray(discordance, dtype=float)

    def reached(rows: np.ndarray, delta) -> np.ndarray:
        share, favour = _split(discordance[rows], delta)
        return _powers(n[rows], share, favour, alpha) >= power

    low, high = np.zeros(len(n)), np.ones(len(n))
    found = n >= 1  # NaN where no difference, however large, would be detected that often
    found[found] = reached(np.flatnonzero(found), 1.0)
    # Bisection starts from [0.7, 1.4] x the normal approximation when that brackets the answer.
    guess = np.array([_normal_mde(int(x), float(s), power, alpha) if ok else 0.0
                      for x, s, ok in zip(n, discordance, found)])
    rows = np.flatnonzero(found & (0 < 1.4 * guess) & (1.4 * guess < 1))
    rows = rows[reached(rows, 1.4 * guess[rows])]
    high[rows] = 1.4 * guess[rows]
    low[rows] = np.where(reached(rows, 0.7 * guess[rows]), 0.0, 0.7 * guess[rows])
    while True:
        rows = np.flatnonzero(found & (high - low > PRECISION))
        if not len(rows):
            return np.where(found, high, np.nan)
        middle = (low[rows] + high[rows]) / 2
        yes = reached(rows, middle)
        high[rows] = np.where(yes, middle, high[rows])
        low[rows] = np.where(yes, low[rows], middle)


@functools.lru_cache(maxsize=4096)
def mcnemar_mde(n: int, discordance: float, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest difference (a fraction) the exact McNemar test on `n` documents detects with
    `power`, given the observed share of documents the runs disagree on, to within PRECISION; NaN
    when no difference, however large, would be detected that often (e.g. a single document: p is
    never below 0.05)."""
    return float(mcnemar_mdes([n], [discordance], power, alpha)[0])


def mcnemar_docs_many(discordance, delta: float, power: float = POWER, alpha: float = ALPHA,
                      most: int = MAX_DOCS) -> list[int | None]:
    """`mcnemar_docs` for many pilots' shares of discordant documents at once: one search per share,
    all taking their steps together, so each step computes every search's power in one pass."""
    delta = abs(float(delta))
    discordance = np.asarray(discordance, dtype=float)
    if delta <= 0:
        return [None] * len(discordance)
    share, favour = _split(discordance, delta)
    z_alpha, z_power = float(ndtri(1 - alpha / 2)), float(ndtri(power))
    guess = np.array([math.ceil(((z_alpha * math.sqrt(s) + z_power * math.sqrt(max(s - delta**2, 0.0))) / delta) ** 2)
                      for s in share.tolist()], dtype=np.int64)

    # The smallest n in [1, most] with enough(n) (assumed to hold from some n on), searched around the
    # guess: double until enough, halve while still enough, then bisect. The exact power saw-tooths in
    # n by a document or two: this is the first n the search reaches.
    low, high = np.maximum(0, guess // 2), np.maximum(1, np.minimum(most, 2 * guess))
    # P(reject | D) depends on the share and favour, not on n: computed once over the D that the
    # windows of n = low..high cover (the search rarely leaves them; beyond, it is computed afresh).
    known = _Rejections.over(_window(np.clip(low, 1, high), share)[0], _window(high, share)[1], favour, alpha)

    def enough(rows: np.ndarray, n: np.ndarray) -> np.ndarray:
        return _powers(n, share[rows], favour[rows], alpha, known.rows(rows)) >= power

    found = np.ones(len(share), dtype=bool)
    rows = np.arange(len(share))
    while len(rows):
        short = ~enough(rows, high[rows])
        rows = rows[short]
        found[rows[high[rows] >= most]] = False  # None: more than `most`
        rows = rows[high[rows] < most]
        low[rows], high[rows] = high[rows], np.minimum(most, 2 * high[rows])
    rows = np.flatnonzero(found & (low > 0))
    while len(rows):
        rows = rows[enough(rows, low[rows])]
        low[rows], high[rows] = low[rows] // 2, low[rows]
        rows = rows[low[rows] > 0]
    while True:
        rows = np.flatnonzero(found & (high - low > 1))
        if not len(rows):
            return [int(h) if ok else None for h, ok in zip(high, found)]
        middle = (low[rows] + high[rows]) // 2
        yes = enough(rows, middle)
        high[rows] = np.where(yes, middle, high[rows])
        low[rows] = np.where(yes, low[rows], middle)


@functools.lru_cache(maxsize=4096)
def mcnemar_docs(discordance: float, delta: float, power: float = POWER, alpha: float = ALPHA,
                 most: int = MAX_DOCS) -> int | None:
    """The fewest documents on which the exact McNemar test detects a difference of `delta` with
    `power`, given the share of documents two such runs disagree on (from a pilot); None if more
    than `most`. The search starts from the normal approximation (Connor 1987) and bisects on the
    exact power (see `mcnemar_docs_many`)."""
    return mcnemar_docs_many([discordance], delta, power, alpha, most)[0]
