"""p-values of the watermark tests: exact tails, and the normal approximations they replace.

Under the null (text written without the key) every distinct (context, token) pair has an
independent u ~ Uniform[0, 1), so:

- KGW: each scored token is green with probability gamma, and the green count of n distinct
  pairs is Binomial(n, gamma): p = P(Bin(n, gamma) >= g), exactly.
- Gumbel: each score -log(1 - u) is Exponential(1), and the sum over n pairs is Gamma(n, 1):
  p = P(Gamma(n, 1) >= s), exactly.

The z-tests (:func:`normal_p_value`, what transformers' ``WatermarkDetector`` and the KGW paper
report) are kept for comparison: they are anti-conservative for short texts, where the
binomial's upper tail is heavier than the normal's.
"""

from __future__ import annotations

import math

from scipy import stats


def binomial_p_value(green: int, n: int, gamma: float) -> float:
    """P(Bin(n, gamma) >= green): the exact KGW p-value (1 for n = 0)."""
    if n <= 0 or green <= 0:
        return 1.0
    return float(stats.binom.sf(green - 1, n, gamma))


def gamma_p_value(score: float, n: int) -> float:
    """P(Gamma(n, 1) >= score): the exact Gumbel p-value (1 for n = 0)."""
    if n <= 0:
        return 1.0
    return float(stats.gamma.sf(score, n))


def z_score(green: int, n: int, gamma: float) -> float:
    """KGW's z = (g - gamma n) / sqrt(n gamma (1 - gamma)); 0 for n = 0."""
    if n <= 0:
        return 0.0
    return (green - gamma * n) / math.sqrt(n * gamma * (1 - gamma))


def gumbel_z_score(score: float, n: int) -> float:
    """(s - n) / sqrt(n): a Gamma(n, 1) sum standardized; 0 for n = 0."""
    if n <= 0:
        return 0.0
    return (score - n) / math.sqrt(n)


def normal_p_value(green: int, n: int, gamma: float) -> float:
    """The z-test's one-sided p-value, 1 - Phi(z), as transformers' ``WatermarkDetector`` and
    Kirchenbauer et al. compute it (approximate; compare with :func:`binomial_p_value`)."""
    return float(stats.norm.sf(z_score(green, n, gamma)))


def gumbel_normal_p_value(score: float, n: int) -> float:
    """1 - Phi((s - n) / sqrt(n)): the normal approximation of :func:`gamma_p_value`."""
    return float(stats.norm.sf(gumbel_z_score(score, n)))


def bonferroni(p_value: float, tests: int) -> float:
    """min(1, p * tests): valid whatever the dependence between the tests (conservative)."""
    return min(1.0, p_value * max(1, tests))
