"""Exact p-values: scipy's tails, a brute-force binomial sum, and the normal approximations."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from retort.watermark import stats


def brute_binomial_tail(green: int, n: int, gamma: float) -> float:
    return sum(math.comb(n, k) * gamma**k * (1 - gamma) ** (n - k) for k in range(green, n + 1))


@pytest.mark.parametrize("n", [1, 2, 5, 13, 30])
@pytest.mark.parametrize("gamma", [0.25, 0.5])
def test_binomial_tail_is_the_brute_force_sum(n, gamma):
    for green in range(n + 1):
        assert stats.binomial_p_value(green, n, gamma) == pytest.approx(
            brute_binomial_tail(green, n, gamma), rel=1e-9, abs=1e-300
        )


@pytest.mark.parametrize(("green", "n"), [(10, 20), (30, 40), (200, 200), (0, 50), (25, 100)])
def test_binomial_tail_matches_scipy(green, n):
    assert stats.binomial_p_value(green, n, 0.25) == scipy_stats.binom.sf(green - 1, n, 0.25)


def test_known_binomial_values():
    assert stats.binomial_p_value(1, 1, 0.25) == pytest.approx(0.25)
    assert stats.binomial_p_value(2, 2, 0.25) == pytest.approx(0.0625)
    assert stats.binomial_p_value(0, 7, 0.25) == 1.0
    assert stats.binomial_p_value(5, 0, 0.25) == 1.0  # nothing scored: no evidence


def test_gamma_tail_matches_scipy_and_closed_form():
    for score, n in [(3.0, 1), (10.0, 5), (150.0, 100), (0.0, 4)]:
        assert stats.gamma_p_value(score, n) == scipy_stats.gamma.sf(score, n)
    # Gamma(1, 1) is Exponential(1): P(X >= s) = e^-s; Gamma(2, 1): (1 + s) e^-s
    assert stats.gamma_p_value(2.5, 1) == pytest.approx(math.exp(-2.5))
    assert stats.gamma_p_value(2.5, 2) == pytest.approx(3.5 * math.exp(-2.5))
    assert stats.gamma_p_value(7.0, 0) == 1.0


def test_normal_approximation_is_the_z_test_and_anti_conservative_when_short():
    z = stats.z_score(9, 12, 0.25)
    assert z == pytest.approx((9 - 3) / math.sqrt(12 * 0.25 * 0.75))
    assert stats.normal_p_value(9, 12, 0.25) == pytest.approx(scipy_stats.norm.sf(z))
    # 9 of 12 green: the z-test claims 3e-5, the exact tail is 4e-4
    assert stats.normal_p_value(9, 12, 0.25) < stats.binomial_p_value(9, 12, 0.25) / 10
    assert stats.gumbel_normal_p_value(130.0, 100) == pytest.approx(scipy_stats.norm.sf(3.0))


def test_bonferroni_caps_at_one():
    assert stats.bonferroni(1e-4, 3) == pytest.approx(3e-4)
    assert stats.bonferroni(0.4, 3) == 1.0
