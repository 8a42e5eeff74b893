"""The power, sample-size and equivalence figures, each against a computation that does not share
their code: scipy's distributions, brute-force enumeration of every outcome, or simulation of the
very test the report runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from qexp.compare.power import (PairedMean, Settings, check_settings, lower_bound, mcnemar_docs, mcnemar_docs_many,
                                mcnemar_mde, mcnemar_mdes, mcnemar_power, mean_docs, mean_mde, mean_power, tost_p,
                                upper_bound)
from qexp.compare.stats import mcnemar_p, weighted_mean_differences

Z95 = stats.norm.ppf(0.95)


def enumerated_power(n: int, discordance: float, delta: float, alpha: float = 0.05) -> float:
    """Every outcome (a_only, b_only) of n paired documents, weighed by its multinomial probability,
    tested with scipy's exact binomial test."""
    share = max(discordance, delta)
    p_a, p_b = (share + delta) / 2, (share - delta) / 2
    total = 0.0
    for a in range(n + 1):
        for b in range(n - a + 1):
            if a + b and stats.binomtest(a, a + b, 0.5).pvalue < alpha:
                total += stats.multinomial.pmf([a, b, n - a - b], n, [p_a, p_b, 1 - p_a - p_b])
    return total


@pytest.mark.parametrize("n,discordance,delta", [(12, 0.3, 0.1), (25, 0.2, 0.15), (30, 0.0, 0.3), (18, 1.0, 0.4),
                                                 (40, 0.05, 0.2)])
def test_mcnemar_power_is_the_exact_power_of_the_test_over_every_outcome(n, discordance, delta):
    assert mcnemar_power(n, discordance, delta) == pytest.approx(enumerated_power(n, discordance, delta), abs=1e-9)


def scipy_power(n: int, discordance: float, delta: float, alpha: float = 0.05) -> float:
    """The same power from scipy's binomial distributions over every count D of discordant documents,
    with the test's critical count found by scipy for each D (too many outcomes to enumerate)."""
    share = max(discordance, delta)
    favour = (share + delta) / (2 * share)
    d = np.arange(n + 1)
    k = np.arange(n + 1)
    # c[D]: the largest k with 2 P(Bin(D, 1/2) <= k) < alpha, -1 if none.
    rejects = 2 * stats.binom.cdf(k[None, :], d[:, None], 0.5) < alpha
    c = np.where(rejects.any(axis=1), rejects.sum(axis=1) - 1, -1)
    given_d = np.where(c >= 0, stats.binom.cdf(c, d, favour) + stats.binom.sf(d - c - 1, d, favour), 0.0)
    return float(np.sum(stats.binom.pmf(d, n, share) * given_d))


@pytest.mark.parametrize("n,discordance,delta", [(700, 0.12, 0.03), (1500, 0.2, 0.02), (1200, 0.01, 0.05),
                                                 (900, 0.3, 0.3)])
def test_mcnemar_power_on_many_documents_matches_scipys_binomials(n, discordance, delta):
    assert mcnemar_power(n, discordance, delta) == pytest.approx(scipy_power(n, discordance, delta), abs=1e-9)


def test_many_searches_at_once_give_each_the_answer_it_gets_alone():
    # The report runs every comparison's search in one batch: no case may borrow another's state.
    n = [1, 2, 7, 20, 50, 50, 200, 700, 2850, 50, 20]
    shares = [1.0, 0.5, 0.0, 0.35, 0.18, 0.02, 0.12, 0.09, 0.2, 1.0, 0.0]
    together = mcnemar_mdes(n, shares)
    alone = [mcnemar_mdes([x], [s])[0] for x, s in zip(n, shares)]
    np.testing.assert_array_equal(together, alone)
    assert np.isnan(together[:2]).all() and not np.isnan(together[2:]).any()  # under 6 documents: never p < 0.05
    pilots = [0.0, 0.02, 0.1, 0.18, 0.5, 0.9, 1.0]
    assert mcnemar_docs_many(pilots, 0.02) == [mcnemar_docs_many([s], 0.02)[0] for s in pilots]
    assert mcnemar_docs_many(pilots, 0.002, most=20_000) == [mcnemar_docs_many([s], 0.002, most=20_000)[0]
                                                             for s in pilots]
    assert None in mcnemar_docs_many(pilots, 0.002, most=20_000)  # a share too large for 20,000 documents


def simulated_mcnemar_power(n, discordance, delta, replicates=20000, seed=1) -> float:
    rng = np.random.default_rng(seed)
    share = max(discordance, delta)
    counts = rng.multinomial(n, [(share + delta) / 2, (share - delta) / 2, 1 - share], size=replicates)
    return float(np.mean(mcnemar_p(counts[:, 0], counts[:, 1]) < 0.05))


def test_at_the_detectable_difference_the_test_finds_it_four_times_in_five():
    mde = mcnemar_mde(200, 0.12)
    assert 0.05 < mde < 0.08  # the scale the report states for a 200-document task
    assert mcnemar_power(200, 0.12, mde) >= 0.8 > mcnemar_power(200, 0.12, mde - 0.002)
    assert simulated_mcnemar_power(200, 0.12, mde) == pytest.approx(0.8, abs=0.015)
    assert mcnemar_mde(800, 0.12) < mde / 1.8  # four times the documents: about half the difference


def test_mcnemar_edge_cases():
    # One document: p = 1 whatever happens, so nothing is detectable.
    assert math.isnan(mcnemar_mde(1, 1.0)) and math.isnan(mcnemar_mde(1, 0.0)) and math.isnan(mcnemar_mde(0, 0.5))
    # No disagreement observed: a difference d needs a share d of documents to disagree, all one way;
    # the exact test rejects from 6 such documents on (2 / 2**6 < 0.05).
    expected = optimize.brentq(lambda d: stats.binom.sf(5, 200, d) - 0.8, 1e-6, 1)
    assert mcnemar_mde(200, 0.0) == pytest.approx(expected, abs=1e-4)  # to a hundredth of a point
    # Every document disagrees: the test is a binomial test on all n documents.
    n = 60
    expected = optimize.brentq(lambda d: sum(stats.binom.pmf(k, n, (1 + d) / 2) for k in range(n + 1)
                                             if stats.binomtest(k, n, 0.5).pvalue < 0.05) - 0.8, 0.01, 0.99)
    assert mcnemar_mde(n, 1.0) == pytest.approx(expected, abs=1e-4)


def test_documents_needed_is_the_first_count_that_reaches_the_power():
    needed = mcnemar_docs(0.1, 0.02)
    assert mcnemar_power(needed, 0.1, 0.02) >= 0.8 > mcnemar_power(needed - 1, 0.1, 0.02)
    connor = ((1.96 * math.sqrt(0.1) + 0.8416 * math.sqrt(0.1 - 0.02**2)) / 0.02) ** 2  # the normal approximation
    assert abs(needed - connor) / connor < 0.1
    assert mcnemar_mde(needed, 0.1) <= 0.02 + 1e-4  # (to the search's precision, a hundredth of a point)
    assert mcnemar_docs(0.5, 0.001) is None  # over 100,000 documents: said, not printed as a number
    assert mcnemar_docs(0.1, 0.0) is None


def test_mean_power_matches_the_closed_form_and_a_simulation_of_the_average_test():
    # Three tasks of 200 documents; disagreement 10%, 20%, 15% (no floor binds at these sizes).
    n, disagree = np.array([200, 200, 200]), np.array([0.10, 0.20, 0.15])
    pair = PairedMean(n=n[None].astype(float), variance=disagree[None], binary=np.ones(3, bool), delta=np.zeros(1),
                      single=True)
    se = math.sqrt(np.sum(disagree / n)) / 3
    closed = optimize.brentq(lambda d: stats.norm.cdf(d / se - 1.959964) + stats.norm.cdf(-d / se - 1.959964) - 0.8,
                             1e-6, 1)
    mde = mean_mde(pair)
    assert mde == pytest.approx(closed, rel=1e-6)
    # Simulate the report's own test of the average with each task differing by `mde`.
    rng = np.random.default_rng(3)
    replicates = 4000
    sums = {"n": np.tile(n, (replicates, 1)).astype(float), "sum_d": np.zeros((replicates, 3)),
            "sum_sq": np.zeros((replicates, 3))}
    for j in range(3):
        share = disagree[j]
        counts = rng.multinomial(n[j], [(share + mde) / 2, (share - mde) / 2, 1 - share], size=replicates)
        sums["sum_d"][:, j] = counts[:, 0] - counts[:, 1]
        sums["sum_sq"][:, j] = counts[:, 0] + counts[:, 1]
    rejected = weighted_mean_differences(sums["n"], sums["sum_d"], sums["sum_sq"])["p_value"] < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.03)


def test_documents_for_the_average_scale_with_the_variance():
    pair = PairedMean.from_sums([200] * 6, [0] * 6, [24] * 6)  # 12% disagreement per task, no difference
    needed = mean_docs(pair, 0.02)
    assert mean_power(pair, 0.02, n=needed) >= 0.8 > mean_power(pair, 0.02, n=needed - 1)
    # Closed form: n = (z_a/2 + z_b)^2 * sum(var) / (k^2 d^2), within a document (the second tail adds little).
    variance = 24 / 199
    assert needed == pytest.approx((1.959964 + 0.841621) ** 2 * 6 * variance / (36 * 0.02**2), abs=1.5)
    assert mean_mde(PairedMean.from_sums([needed] * 6, [0] * 6, [needed * 24 / 200] * 6)) <= 0.0201


def test_runs_that_never_disagree_are_not_equivalent_from_zero_variance():
    few = PairedMean.from_sums([20], [0], [0])
    # A difference d needs d of the documents to disagree: the variance is taken as at least d(1 - d).
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert mean_mde(few) == pytest.approx(z * z / (20 + z * z), abs=1e-3)  # d = z * sqrt(d(1 - d) / 20)
    assert tost_p(few, 0.01) > 0.3  # 20 identical answers do not show "within 1 point"
    z = Z95
    assert lower_bound(few) == pytest.approx(-z * z / (20 + z * z), abs=1e-6)  # d0 = z * sqrt(|d0|(1-|d0|)/20)
    many = PairedMean.from_sums([5000] * 4, [0] * 4, [0] * 4)
    assert tost_p(many, 0.01) < 0.001


def test_tost_is_the_larger_of_two_one_sided_tests_and_holds_its_level():
    rng = np.random.default_rng(5)
    d = rng.choice([-1.0, 0.0, 1.0], size=400, p=[0.08, 0.85, 0.07])
    pair = PairedMean.from_sums([len(d)], [d.sum()], [np.sum(d * d)])
    se = d.std(ddof=1) / math.sqrt(len(d))
    expected = max(stats.norm.sf((d.mean() + 0.03) / se), stats.norm.cdf((d.mean() - 0.03) / se))
    assert tost_p(pair, 0.03) == pytest.approx(expected, rel=1e-9)
    # Equivalent at 5% exactly when the 90% interval lies inside the margin.
    for margin in (0.01, 0.02, 0.03, 0.05):
        inside = -margin < d.mean() - Z95 * se and d.mean() + Z95 * se < margin
        assert (tost_p(pair, margin) < 0.05) == inside
    # At a true difference on the margin, equivalence is declared at most ~5% of the time.
    margin, share, replicates = 0.02, 0.15, 4000
    counts = rng.multinomial(400, [(share + margin) / 2, (share - margin) / 2, 1 - share], size=replicates)
    declared = [tost_p(PairedMean.from_sums([400], [a - b], [a + b]), margin) < 0.05 for a, b, _ in counts]
    assert np.mean(declared) < 0.065


def test_one_sided_bounds_are_the_closed_form_when_the_floor_does_not_bind():
    pair = PairedMean.from_sums([300, 300], [-12, -3], [40, 35])
    variance = pair.variance
    se = math.sqrt(np.sum(variance / 300)) / 2
    assert lower_bound(pair) == pytest.approx(pair.delta - Z95 * se, abs=1e-6)
    assert upper_bound(pair) == pytest.approx(pair.delta + Z95 * se, abs=1e-6)
    covered = 0
    rng = np.random.default_rng(9)
    for _ in range(2000):  # the lower bound sits below the truth 95% of the time
        counts = rng.multinomial(300, [0.06, 0.09, 0.85])
        covered += lower_bound(PairedMean.from_sums([300], [counts[0] - counts[1]], [counts[0] + counts[1]])) <= -0.03
    assert covered / 2000 == pytest.approx(0.95, abs=0.015)


@pytest.mark.parametrize("settings,word", [
    (Settings(power=0.03), "--power 3"), (Settings(power=1.0), "--power 100"), (Settings(margin=-0.01), "--margin -1"),
    (Settings(difference=0.0), "--difference 0"), (Settings(recovery=1.2), "--recovery 120"),
    (Settings(margin=math.nan), "--margin nan"),
])
def test_settings_that_make_no_sense_are_refused_with_the_fix(settings, word):
    (problem,) = check_settings(settings)
    assert problem.startswith(word) and "use e.g." in problem


def test_sensible_settings_pass():
    assert check_settings(Settings()) == [] and check_settings(Settings(0.9, 0.05, 0.02, 0.99)) == []
