"""What a study could have detected, and what it shows to be equivalent.

"Not significantly different" is not "the same": with 200 documents a task hides differences of
several points. For every comparison the report therefore also states

- the **minimum detectable difference** (MDE): the smallest true difference the study's test would
  have found with `power` (80% by default) at two-sided `ALPHA`, given its documents and how often
  the two runs disagreed (per task: the exact McNemar test's power, computed exactly; on the
  average over tasks: the paired z-test's, normal);
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

import functools
import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.special import bdtr, gammaln, ndtr, ndtri

from .stats import ALPHA

__all__ = ["POWER", "DIFFERENCE", "MARGIN", "RECOVERY", "MAX_DOCS", "Settings", "check_settings",
           "mcnemar_power", "mcnemar_mde", "mcnemar_mdes", "mcnemar_docs", "mcnemar_docs_many", "PairedMean", "mean_power", "mean_mde", "mean_docs",
           "tost_p", "lower_bound", "upper_bound"]

POWER = 0.8  # the usual target power
DIFFERENCE = 0.02  # the difference a "how many documents" question asks about: 2 points
MARGIN = 0.01  # equivalence margin on the average: 1 point
RECOVERY = 0.95  # the recovery llm-compressor's own evaluation tests require (of a point estimate)
MAX_DOCS = 100_000  # beyond this, "more than" (no benchmark qexp runs has more documents per task)


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


# ----------------------------------------------------------------------------- one task: exact McNemar
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
