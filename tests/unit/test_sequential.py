"""The sequential design's promises, by simulation: paired 0/1 outcomes of two runs, judged after each
chunk by the report's own average test (`stats.weighted_mean_differences`) and `sequential.decide`.
However a run stops, a difference is claimed, and equivalence within the margin, no more often than
alpha says, and the intervals cover; a clear difference stops early."""

from __future__ import annotations

import numpy as np
import pytest

from qexp.compare.power import PairedMean, mean_mde
from qexp.compare.sequential import FUTILITY, Look, boundaries, decide, futile, predictive_power, repeated_p, simulate, spent
from qexp.compare.stats import ALPHA

# The SmolLM2 study's shape: four tasks of 500 documents, two runs disagreeing on a fifth of them.
TASKS, BUDGET, CHUNKS, DISAGREE, MARGIN = 4, 500, 10, 0.2, 0.01
REPLICATES = 4000
SLACK = 3 * np.sqrt(ALPHA * (1 - ALPHA) / REPLICATES)  # three Monte Carlo standard errors


def brownian_first_crossings(fractions, limits, replicates=400_000, seed=0) -> np.ndarray:
    t = np.asarray(fractions)
    steps = np.random.default_rng(seed).normal(size=(replicates, len(t))) * np.sqrt(np.diff(np.r_[0, t]))
    crossed = np.abs(np.cumsum(steps, axis=1) / np.sqrt(t)) >= np.asarray(limits)
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    return np.array([np.mean(first == k) for k in range(len(t))])


@pytest.mark.parametrize("fractions", [(0.2, 0.4, 0.6, 0.8, 1.0), (0.1, 0.25, 0.3, 0.7, 1.0), (1.0,)])
def test_each_look_spends_what_the_spending_function_allows(fractions):
    limits = boundaries(fractions)
    observed = brownian_first_crossings(fractions, limits)
    allowed = np.diff(np.r_[0, spent(np.array(fractions))])
    np.testing.assert_allclose(observed, allowed, atol=0.0015)
    assert observed.sum() == pytest.approx(ALPHA, abs=0.0015)
    assert list(limits) == sorted(limits, reverse=True) and limits[-1] < 2.1  # strict early, ~1.96 at the end
    if fractions == (1.0,):
        assert limits[0] == pytest.approx(1.959964, abs=1e-5)  # one look: the fixed test


def test_under_no_difference_a_difference_is_claimed_at_most_alpha_of_the_time_however_it_stops():
    out = simulate(0.0, DISAGREE, TASKS, BUDGET, CHUNKS, MARGIN, REPLICATES, seed=1)
    claimed = np.isin(out.decided, ["better", "worse"]).mean()
    assert claimed <= ALPHA + SLACK
    assert claimed > ALPHA / 3  # (the design spends its alpha: not a test that never rejects)


@pytest.mark.parametrize("delta", [0.0, 0.02, 0.04])
def test_the_interval_at_the_stop_covers_the_true_difference(delta):
    out = simulate(delta, DISAGREE, TASKS, BUDGET, CHUNKS, MARGIN, REPLICATES, seed=2)
    assert out.covered.mean() >= 1 - ALPHA - SLACK


def test_at_a_difference_of_exactly_the_margin_equivalence_is_claimed_at_most_alpha_of_the_time():
    # Many documents, so equivalence within 1 point can be shown: it is, at no difference...
    big = dict(disagree=0.1, tasks=TASKS, budget=4000, chunks=CHUNKS, margin=MARGIN, replicates=REPLICATES)
    assert (simulate(0.0, seed=3, **big).decided == "equivalent").mean() > 0.5
    # ...and at a true difference of the margin itself, either way, no more often than alpha.
    for delta in (MARGIN, -MARGIN):
        assert (simulate(delta, seed=4, **big).decided == "equivalent").mean() <= ALPHA + SLACK


def test_clear_differences_stop_early_and_hard_ones_use_the_budget():
    used = {points: simulate(points / 100, DISAGREE, TASKS, BUDGET, CHUNKS, MARGIN, REPLICATES, seed=5)
            for points in (0, 1, 2, 4)}
    share = {points: out.documents.mean() / out.budget for points, out in used.items()}
    assert share[0] > 0.9 and share[1] > 0.9  # undecidable at this budget: nearly all of it
    assert share[1] > share[2] > share[4]
    # The fixed design's detectable difference (80% power, the report's own computation) ...
    variance = np.full((1, TASKS), DISAGREE)
    pilot = PairedMean(np.full((1, TASKS), float(BUDGET)), variance, np.ones(TASKS, dtype=bool), np.zeros(1), True)
    mde = mean_mde(pilot)
    assert 0.025 < mde < 0.03
    # ... twice over is decided on half the documents or fewer, and rightly.
    twice = simulate(2 * mde, DISAGREE, TASKS, BUDGET, CHUNKS, MARGIN, REPLICATES, seed=6)
    assert twice.documents.mean() / twice.budget <= 0.5
    assert (twice.decided == "better").mean() > 0.99


def test_the_repeated_p_value_is_below_alpha_exactly_when_a_boundary_was_crossed():
    looks = [Look(0.25, 0.01, 0.01), Look(0.5, 0.02, 0.007), Look(0.75, 0.018, 0.0058)]
    p = repeated_p(looks)
    for alpha in (p * 0.9, p * 1.1):
        crossed = any(abs(look.delta) / look.se >= c
                      for look, c in zip(looks, boundaries(tuple(x.fraction for x in looks), alpha)))
        assert crossed == (alpha > p)
    assert decide(looks, MARGIN).decided == ("better" if p < ALPHA else "")
    assert repeated_p([Look(1.0, 0.0, 0.01)]) == 1.0


@pytest.mark.parametrize("delta", [0.0, 0.03])
def test_per_task_each_task_claims_a_difference_it_does_not_have_and_misses_its_own_at_most_alpha_of_the_time(delta):
    """eval.sequential.per_task: each task on its own at alpha / tasks. Under no difference, some task
    claims one at most alpha of the time; with one, every task's interval covers it at least 1 - alpha
    of the time. The average is judged exactly as without per_task: the same verdicts on the same outcomes."""
    both = dict(disagree=DISAGREE, tasks=TASKS, budget=BUDGET, chunks=CHUNKS, margin=MARGIN, replicates=REPLICATES, seed=7)
    out, alone = simulate(delta, per_task=True, **both), simulate(delta, **both)
    if delta == 0:
        claimed = np.isin(out.task_decided, ["better", "worse"]).any(axis=1).mean()
        assert ALPHA / 3 < claimed <= ALPHA + SLACK
    assert out.tasks_covered.mean() >= 1 - ALPHA - SLACK
    assert (out.decided == alone.decided).all() and (out.covered == alone.covered).all()
    # Deciding each task costs documents: a task goes on while it is undecided, so never fewer.
    assert (out.documents >= alone.documents).all() and out.documents.mean() > alone.documents.mean()


def test_stopping_for_futility_claims_nothing_more_and_stops_mostly_comparisons_that_would_have_stayed_undecided():
    """eval.sequential.futility: the same outcomes (same seed) with and without it. A stop for futility
    only ever turns "next chunk" into "undecided", so the error rates and coverage hold; it saves the
    hard comparisons' documents; and few comparisons it stopped would have been decided by the budget."""
    both = dict(disagree=DISAGREE, tasks=TASKS, budget=BUDGET, chunks=CHUNKS, margin=MARGIN, replicates=REPLICATES)
    null = simulate(0.0, seed=8, futility=FUTILITY, **both)
    assert np.isin(null.decided, ["better", "worse"]).mean() <= ALPHA + SLACK
    assert null.covered.mean() >= 1 - ALPHA - SLACK
    for delta in (0.01, 0.02, 0.04):
        kept, stopped = simulate(delta, seed=9, **both), simulate(delta, seed=9, futility=FUTILITY, **both)
        futile = (stopped.decided == "") & (stopped.documents < stopped.budget)
        if delta < 0.04:  # near the budget's reach, stops are common and nearly all would have stayed undecided
            assert futile.mean() > 0.3 and (kept.decided[futile] != "").mean() < 0.1
        assert (stopped.decided != "").mean() >= (kept.decided != "").mean() - 0.03  # little power lost
        assert stopped.covered.mean() >= 1 - ALPHA - SLACK
        if delta == 0.01:  # a difference the budget cannot decide: most of its documents saved
            assert kept.documents.mean() / kept.budget > 0.9 > 0.75 > stopped.documents.mean() / stopped.budget


def test_the_predicted_probability_of_a_decision_follows_the_evidence():
    planned = 10
    clear, hopeless = [Look(0.5, -0.05, 0.01)], [Look(0.5, -0.004, 0.008)]
    assert predictive_power(clear, planned, MARGIN) > 0.95  # far beyond the last boundary already
    assert predictive_power(hopeless, planned, MARGIN) < 0.1  # near 0, too noisy for equivalence within 1 point
    assert predictive_power([Look(0.5, 0.0, 0.002)], planned, MARGIN) > 0.95  # equivalence within reach
    later = [Look(0.9, -0.004, 0.008 * np.sqrt(0.5 / 0.9))]  # the same estimate later: less room to move
    assert predictive_power(later, planned, MARGIN) < predictive_power(hopeless, planned, MARGIN)
    assert futile(hopeless, planned, MARGIN, ALPHA, 0.1) == predictive_power(hopeless, planned, MARGIN)
    assert futile(clear, planned, MARGIN, ALPHA, 0.1) is None and futile(hopeless, planned, MARGIN, ALPHA, 0) is None
    assert futile(hopeless + [Look(1.0, -0.004, 0.0057)], planned, MARGIN, ALPHA, 0.1) is None  # the last look: the budget
