"""Sequential comparisons: decide each run against the baseline after every chunk of documents.

A fixed study spends its whole budget on every run. A sequential one evaluates each task's documents
in chunks and, after each chunk (a *look*), tests each quantized run's average difference from the
baseline on the documents both have scored; the run stops as soon as that difference is decided.
Looking again and again at a fixed-size test's p-value would find a "difference" far more often
than its level says, so the looks are planned as a group-sequential design:

- **α-spending** (Lan & DeMets 1983) with O'Brien & Fleming's spending function: by the share t of
  the budget used, at most alpha(t) = 2 - 2 Phi(z_(1-alpha/2) / sqrt(t)) of the false-positive rate
  is spent. Early looks demand a very large z, the last one little more than the fixed test's 1.96,
  so the design loses almost no power at the full budget, and the looks may come at any shares t.
- **Boundaries** c_k on |Z_k| by numerical integration of the paired z-statistic's path, whose
  increments are independent (Armitage, McPherson & Rowe 1969; Jennison & Turnbull 2000, ch. 19).
- **A verdict** at look k: *better* or *worse* when |Z_k| >= c_k(alpha), i.e. when the repeated
  confidence interval delta +- c_k(alpha) se excludes 0; *equivalent* within +-margin when the
  interval at level 1 - 2 alpha, delta +- c_k(2 alpha) se, lies inside (-margin, margin) (two
  one-sided tests, each at alpha); otherwise the next chunk, and at the budget: undecided.
- **Stopping for futility** (non-binding): a comparison that is undecided stops when the
  probability of deciding it by the budget's last look, predicted from the looks so far (a flat
  prior on the true difference: the estimate's own uncertainty, not only its current value), falls
  below `futility`. It claims nothing, so it can only lower the error rates above; what it costs is
  power, the chance that a comparison it stopped would have been decided (Spiegelhalter, Freedman &
  Blackburn 1986; Jennison & Turnbull 2000, ch. 10).
- **Valid at the stopping time.** The repeated confidence intervals cover the true difference at
  every look at once with probability 1 - alpha, hence at whatever look the run stopped. The
  repeated p-value, the smallest alpha whose boundaries the run crossed at a look it took, is a
  valid p-value whatever the stopping rule, so Holm across the study's comparisons applies to it
  as it does to fixed-size p-values.

The z-statistic is the report's own (`stats.weighted_mean_differences`: each task weighs the same,
documents are paired), so a fixed study and a sequential one test the same quantity. Its normal
approximation is the fixed report's too; `tests/unit/test_sequential.py` checks the error rates by
simulation of paired 0/1 outcomes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from .stats import ALPHA

__all__ = ["spent", "boundaries", "Look", "Verdict", "decide", "FUTILITY", "predictive_power", "futile", "repeated_p",
           "repeated_equivalence_p", "Simulated", "simulate"]

GRID = 601  # points per look on which the z-path's density is carried (Simpson's rule)
FUTILITY = 0.05  # eval.sequential.futility's default: stop undecided below this predictive probability


def spent(fraction, alpha: float = ALPHA):
    """O'Brien-Fleming-type α-spending: the share of the two-sided false-positive rate `alpha` that
    may be spent by `fraction` of the budget (0 at the start, `alpha` at the whole budget)."""
    fraction = np.clip(np.asarray(fraction, dtype=float), 1e-12, 1.0)
    return 2 - 2 * ndtr(ndtri(1 - alpha / 2) / np.sqrt(fraction))


def _simpson(width: float, points: int) -> np.ndarray:
    weights = np.ones(points)
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    return weights * width / 3


@functools.lru_cache(maxsize=4096)
def boundaries(fractions: tuple[float, ...], alpha: float = ALPHA) -> tuple[float, ...]:
    """Two-sided z boundaries c_1..c_K for looks at increasing `fractions` of the budget: under no
    difference, |Z_k| first reaches c_k at look k with probability spent(t_k) - spent(t_(k-1)).

    The path S_k = Z_k sqrt(t_k) is a Brownian motion observed at t_k. Its density on the
    continuation region (|S_k| < c_k sqrt(t_k)) is carried from look to look on a grid, and each
    c_k found by bisection so that the probability of first crossing there is the spending's step.
    """
    if any(b <= a for a, b in zip(fractions, fractions[1:])) or not 0 < fractions[0] or fractions[-1] > 1 + 1e-12:
        raise ValueError(f"looks must be at increasing fractions of the budget in (0, 1]: {fractions}")
    budget = np.diff(np.concatenate([[0.0], spent(np.array(fractions), alpha)]))
    found: list[float] = []
    grid = density = None
    previous = 0.0
    for t, step in zip(fractions, budget):
        if grid is None:  # the first look: Z_1 is standard normal
            c = float(ndtri(1 - step / 2)) if step > 0 else math.inf
            found.append(c)
            half = min(c, 12.0) * math.sqrt(t)
            grid = np.linspace(-half, half, GRID)
            density = np.exp(-grid**2 / (2 * t)) / math.sqrt(2 * math.pi * t)
            previous = t
            continue
        spread = math.sqrt(t - previous)
        weights = _simpson(grid[1] - grid[0], GRID) * density

        def crossing(c: float) -> float:  # P(continue so far, then |Z| >= c here)
            edge = c * math.sqrt(t)
            return float(weights @ (ndtr((-edge - grid) / spread) + ndtr((grid - edge) / spread)))

        if step <= 0:
            c = math.inf
        else:
            low, high = 0.0, 40.0
            for _ in range(60):
                middle = (low + high) / 2
                low, high = (middle, high) if crossing(middle) > step else (low, middle)
            c = high
        found.append(c)
        half = min(c, 12.0) * math.sqrt(t)
        new_grid = np.linspace(-half, half, GRID)
        kernel = np.exp(-(new_grid[:, None] - grid[None, :]) ** 2 / (2 * spread**2)) / (spread * math.sqrt(2 * math.pi))
        grid, density, previous = new_grid, kernel @ weights, t
    return tuple(found)


@dataclass(frozen=True)
class Look:
    """One comparison at one look: the budget's share used so far, the estimated average difference
    (a - b, as a fraction) and its standard error, both from `stats.weighted_mean_differences`."""

    fraction: float
    delta: float
    se: float


@dataclass(frozen=True)
class Verdict:
    """Where a comparison stands after its looks.

    `decided`: "better" or "worse" (a than b), "equivalent" (within ±margin), or "" (not yet; or,
    at the budget, never). `ci_low`, `ci_high`: the repeated confidence interval at 1 - alpha at the
    last look; `eq_low`, `eq_high`: the one at 1 - 2 alpha that equivalence is judged by; `looks`: how many.
    """

    decided: str
    ci_low: float
    ci_high: float
    eq_low: float
    eq_high: float
    looks: int


def _crossed(looks: list[Look], alpha: float) -> bool:
    limits = boundaries(tuple(look.fraction for look in looks), alpha)
    return any(look.se > 0 and abs(look.delta) / look.se >= c for look, c in zip(looks, limits))


def _equivalence_boundaries(fractions: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    """The boundaries of equivalence at `alpha`: two one-sided tests, each at alpha, are the 1 - 2 alpha interval."""
    return boundaries(fractions, min(2 * alpha, 0.9999))


def _inside(looks: list[Look], margin: float, alpha: float) -> bool:
    limits = _equivalence_boundaries(tuple(look.fraction for look in looks), alpha)
    return any(look.se > 0 and abs(look.delta) + c * look.se < margin for look, c in zip(looks, limits))


def _smallest(shown, top: float) -> float:
    """The smallest alpha in (0, top] at which `shown(alpha)` (monotone: the larger alpha, the easier) holds; 1 if none."""
    low, high = 1e-12, top
    if not shown(high):
        return 1.0
    if shown(low):
        return low
    for _ in range(40):
        middle = math.sqrt(low * high)  # p-values span decades: bisect on the log scale
        low, high = (low, middle) if shown(middle) else (middle, high)
    return high


def repeated_p(looks: list[Look]) -> float:
    """The smallest alpha at which the design's boundaries were crossed at one of the looks taken:
    P(repeated p <= alpha) <= alpha under no difference, however the looks were stopped."""
    return _smallest(lambda alpha: _crossed(looks, alpha), 0.9999) if looks else 1.0


def repeated_equivalence_p(looks: list[Look], margin: float) -> float:
    """The smallest alpha at which equivalence within ±`margin` (a fraction) was shown at one of the looks
    taken (the repeated 1 - 2 alpha interval inside the margin): P(it is <= alpha) <= alpha when the
    difference is ±margin or beyond, however the looks were stopped. Holm applies across runs."""
    return _smallest(lambda alpha: _inside(looks, margin, alpha), 0.4999) if looks else 1.0


def decide(looks: list[Look], margin: float, alpha: float = ALPHA) -> Verdict:
    """The verdict after `looks` (at least one, at increasing fractions; the last at 1 is the
    budget). Better/worse take precedence over equivalence: a difference shown is reported as such.
    Nothing is decided while the runs have not disagreed on a document (a standard error of 0)."""
    last = looks[-1]
    fractions = tuple(look.fraction for look in looks)
    c, c_eq = boundaries(fractions, alpha)[-1], _equivalence_boundaries(fractions, alpha)[-1]
    ci = (last.delta - c * last.se, last.delta + c * last.se)
    eq = (last.delta - c_eq * last.se, last.delta + c_eq * last.se)
    if not last.se > 0:  # no disagreement seen yet: a zero-width interval is no evidence either way
        decided = ""
    elif ci[0] > 0 or ci[1] < 0:
        decided = "better" if last.delta > 0 else "worse"
    elif -margin < eq[0] and eq[1] < margin:
        decided = "equivalent"
    else:
        decided = ""
    return Verdict(decided, *ci, *eq, looks=len(looks))


def predictive_power(looks: list[Look], planned: int, margin: float, alpha: float = ALPHA) -> float:
    """The probability that the comparison is decided at the last of `planned` looks (a difference at
    that look's boundary, or equivalence within ±`margin`), given its looks so far: the final estimate
    is the current one plus the rest of the budget's documents, the true difference drawn from a flat
    prior (normal around the current estimate, with its standard error), the standard error at the
    budget extrapolated as 1/sqrt(documents). Later interim looks are left out, so it errs low."""
    last = looks[-1]
    t = last.fraction
    if t >= 1 or not last.se > 0:
        return 1.0
    fractions = tuple((k + 1) / planned for k in range(planned))
    c, c_eq = boundaries(fractions, alpha)[-1], _equivalence_boundaries(fractions, alpha)[-1]
    se_end = last.se * math.sqrt(t)
    spread = math.sqrt((1 - t) * se_end**2 + (1 - t) ** 2 * last.se**2)
    differs = ndtr((-c * se_end - last.delta) / spread) + 1 - ndtr((c * se_end - last.delta) / spread)
    room = margin - c_eq * se_end  # the final estimate must lie within ±room for equivalence
    inside = ndtr((room - last.delta) / spread) - ndtr((-room - last.delta) / spread) if room > 0 else 0.0
    return float(differs + inside)


def futile(looks: list[Look], planned: int, margin: float, alpha: float, futility: float) -> float | None:
    """For an undecided comparison before its last look: its `predictive_power` if below `futility`
    (it stops for futility: a decision by the budget has become unlikely), else None (0: never)."""
    if not futility or len(looks) >= planned:
        return None
    predicted = predictive_power(looks, planned, margin, alpha)
    return predicted if predicted < futility else None


@dataclass(frozen=True)
class Simulated:
    """`simulate`'s outcome per replicate: the verdict on the average, the documents used (all tasks
    together), and whether the repeated interval at the stop covered the true difference. With
    `per_task`, also each task's own verdict (replicate × task) and whether every task's interval covered."""

    decided: np.ndarray
    documents: np.ndarray
    covered: np.ndarray
    budget: int
    task_decided: np.ndarray | None = None
    tasks_covered: np.ndarray | None = None


def simulate(delta: float, disagree: float, tasks: int, budget: int, chunks: int, margin: float,
             replicates: int = 2000, seed: int = 0, alpha: float = ALPHA, per_task: bool = False,
             futility: float = 0.0) -> Simulated:
    """Sequential comparisons of two runs that truly differ by `delta` on every task, disagreeing on
    a share `disagree` of the documents: `tasks` tasks of `budget` documents each, looked at after
    each of `chunks` equal chunks, judged by the report's own average test and by `decide`, and
    stopped undecided by `futile` at `futility` (0: never). `per_task`: each task is also decided on
    its own, at alpha / `tasks`, as `qexp.stopping` does: a task's evaluation goes on until both it
    and the average are settled."""
    from .stats import weighted_mean_differences

    rng = np.random.default_rng(seed)
    share = max(disagree, abs(delta))
    size = budget // chunks
    counts = rng.multinomial(size, [(share + delta) / 2, (share - delta) / 2, 1 - share], (replicates, tasks, chunks))
    plus, minus = counts[..., 0].cumsum(axis=2), counts[..., 1].cumsum(axis=2)  # by the end of each chunk
    n = np.broadcast_to(size * np.arange(1, chunks + 1), plus.shape)
    average = weighted_mean_differences(n.transpose(0, 2, 1).reshape(-1, tasks),
                                        (plus - minus).transpose(0, 2, 1).reshape(-1, tasks),
                                        (plus + minus).transpose(0, 2, 1).reshape(-1, tasks))
    average_looks = [[Look((k + 1) / chunks, float(average["delta"][row * chunks + k]), float(average["se"][row * chunks + k]))
                      for k in range(chunks)] for row in range(replicates)]
    decided, stop, covered = _first_decisions(average_looks, delta, margin, alpha, futility)
    if not per_task:
        return Simulated(decided, tasks * size * (stop + 1), covered, tasks * size * chunks)
    own = weighted_mean_differences(n.reshape(-1, 1), (plus - minus).reshape(-1, 1), (plus + minus).reshape(-1, 1))
    deltas, ses = own["delta"].reshape(plus.shape), own["se"].reshape(plus.shape)  # each task's own paired test
    task_decided = np.full((replicates, tasks), "", dtype=object)
    tasks_covered = np.ones(replicates, dtype=bool)
    documents = np.zeros(replicates, dtype=np.int64)
    for j in range(tasks):
        looks = [[Look((k + 1) / chunks, float(deltas[row, j, k]), float(ses[row, j, k])) for k in range(chunks)]
                 for row in range(replicates)]
        task_decided[:, j], own_stop, own_covered = _first_decisions(looks, delta, margin, alpha / tasks, futility)
        tasks_covered &= own_covered
        documents += size * (np.maximum(stop, own_stop) + 1)
    return Simulated(decided, documents, covered, tasks * size * chunks, task_decided, tasks_covered)


def _first_decisions(paths: list[list[Look]], delta: float, margin: float, alpha: float, futility: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per path of looks: the verdict at the first look that decides (or is futile, or the last),
    that look's index, and whether its repeated interval covers `delta`."""
    decided = np.full(len(paths), "", dtype=object)
    stop = np.zeros(len(paths), dtype=np.int64)
    covered = np.zeros(len(paths), dtype=bool)
    for row, looks in enumerate(paths):
        for k in range(len(looks)):
            verdict = decide(looks[:k + 1], margin, alpha)
            if verdict.decided or k == len(looks) - 1 or futile(looks[:k + 1], len(looks), margin, alpha,
                                                                futility) is not None:
                decided[row], stop[row], covered[row] = verdict.decided, k, verdict.ci_low <= delta <= verdict.ci_high
                break
    return decided, stop, covered
