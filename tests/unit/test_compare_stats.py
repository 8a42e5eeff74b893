from __future__ import annotations

import math

import numpy as np
import pytest

from qexp.compare.stats import holm, mcnemar_exact, wilson_interval


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
