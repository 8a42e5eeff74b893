from __future__ import annotations

import math

import numpy as np
import pytest

from qexp.compare.stats import holm, mcnemar_exact, paired_bootstrap, weighted_mean_difference, wilson_interval


def test_exact_mcnemar_matches_the_binomial_by_hand():
    # 3 documents only A got right, 6 only B: p = 2 * P(X <= 3 | n=9, 1/2) = 2 * 130/512
    a = np.array([1] * 3 + [0] * 6 + [1] * 20 + [0] * 21)
    b = np.array([0] * 3 + [1] * 6 + [1] * 20 + [0] * 21)
    test = mcnemar_exact(a, b)
    assert (test.n, test.a_only, test.b_only) == (50, 3, 6)
    assert test.p_value == pytest.approx(2 * 130 / 512)


def test_exact_mcnemar_without_discordant_documents_is_one():
    assert mcnemar_exact(np.ones(10), np.ones(10)).p_value == 1.0


def test_exact_mcnemar_all_discordant_one_way():
    assert mcnemar_exact(np.zeros(10), np.ones(10)).p_value == pytest.approx(2 / 2**10)


def test_holm_step_down_with_monotonicity_and_nan():
    adjusted = holm([0.01, 0.04, math.nan, 0.03])
    assert adjusted[0] == pytest.approx(0.03)
    assert adjusted[3] == pytest.approx(0.06)
    assert adjusted[1] == pytest.approx(0.06)  # 1 * 0.04, raised to keep the order
    assert math.isnan(adjusted[2])
    assert holm([0.9, 0.8]).tolist() == [1.0, 1.0]


def test_wilson_interval_known_values():
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(25, 50)
    assert (low, high) == pytest.approx((0.3664, 0.6336), abs=1e-4)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_the_difference_of_averages_matches_a_hand_computed_z_test():
    """Two tasks of unequal size, each weighing half: the mean of per-task mean differences, its standard
    error from each task's sample variance, a normal interval and the z-test's p, computed here with scipy."""
    from scipy.stats import norm

    rng = np.random.default_rng(3)
    tasks = [rng.integers(0, 2, 120) - rng.integers(0, 2, 120) * 0.8, rng.integers(0, 2, 45) * 1.0 - 0.3]
    means = [d.mean() for d in tasks]
    se = np.sqrt(sum(d.var(ddof=1) / len(d) for d in tasks)) / len(tasks)
    delta = float(np.mean(means))
    got = weighted_mean_difference([len(d) for d in tasks], [d.sum() for d in tasks], [(d * d).sum() for d in tasks])
    assert got.delta == pytest.approx(delta)
    assert (got.ci_low, got.ci_high) == pytest.approx((delta - norm.ppf(0.975) * se, delta + norm.ppf(0.975) * se))
    assert got.p_value == pytest.approx(2 * norm.sf(abs(delta) / se))
    assert got.n == 165


def test_the_paired_bootstrap_agrees_with_scipys_and_with_the_normal_approximation():
    from scipy.stats import bootstrap, norm

    rng = np.random.default_rng(7)
    d = rng.normal(0.08, 1.0, 400)
    low, high, p = paired_bootstrap(lambda idx: d[idx].mean(), len(d), replicates=20000, seed=1)
    reference = bootstrap((d,), np.mean, n_resamples=20000, method="percentile", random_state=2).confidence_interval
    assert low == pytest.approx(reference.low, abs=0.01) and high == pytest.approx(reference.high, abs=0.01)
    # the share of resampled means beyond zero, doubled: the normal approximation's p, up to resampling noise
    assert p == pytest.approx(2 * norm.sf(abs(d.mean()) / (d.std(ddof=0) / np.sqrt(len(d)))), abs=0.02)


def test_holm_intervals_exclude_zero_exactly_when_holm_rejects():
    """The interval beside a Holm verdict agrees with it, and lies between the unadjusted and Bonferroni's."""
    from scipy.special import ndtr, ndtri

    from qexp.compare.stats import holm_intervals

    rng = np.random.default_rng(0)
    delta, se = rng.normal(0, 0.02, 400), rng.uniform(0.005, 0.02, 400)
    p = 2 * ndtr(-np.abs(delta) / se)
    z = ndtri(0.975)
    adjusted = holm(p)
    low, high = holm_intervals(delta, delta - z * se, delta + z * se, p, adjusted)
    assert 0 < (adjusted < 0.05).sum() < 400  # both verdicts occur
    assert np.array_equal((low > 0) | (high < 0), adjusted < 0.05)
    width, raw, bonferroni = high - low, 2 * z * se, 2 * ndtri(1 - 0.05 / 800) * se
    assert np.all(width >= raw - 1e-12) and np.all(width <= bonferroni + 1e-12)


def test_letter_groups_share_a_letter_exactly_when_not_shown_apart():
    import itertools

    from qexp.compare.ranking import letter_groups

    # The README's SmolLM2 case: the Baseline beats AWQ-16 but neither is told from AWQ-32.
    labels = ["Baseline", "AWQ-32", "AWQ-16", "GPTQ-32", "GPTQ-16"]
    apart = {frozenset(p) for p in itertools.product(labels[:3], labels[3:])} | {frozenset(("Baseline", "AWQ-16"))}
    assert letter_groups(labels, apart) == [["a"], ["a", "b"], ["b"], ["c"], ["c"]]
    rng = np.random.default_rng(1)
    for n in (2, 5, 9, 40):  # 40 runs far apart need more than 26 letters
        labels = [f"r{i}" for i in range(n)]
        for density in (0.2, 0.6, 0.9):
            apart = {frozenset(p) for p in itertools.combinations(labels, 2) if rng.random() < density}
            letters = dict(zip(labels, letter_groups(labels, apart)))
            for a, b in itertools.combinations(labels, 2):
                assert bool(set(letters[a]) & set(letters[b])) == (frozenset((a, b)) not in apart), (n, a, b)
