"""Wilson intervals against known values and scipy, and the two-order aggregation rule."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from retort.judge.stats import accuracy, combine, pairwise_counts, wilson, winner


@pytest.mark.parametrize(("k", "n"), [(0, 10), (1, 10), (5, 10), (9, 10), (10, 10), (37, 80)])
def test_wilson_matches_scipy(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(k, n) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_wilson_known_values():
    # Wilson 95% for 0/10 and 8/10, by the closed form (z = 1.96).
    assert wilson(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson(8, 10) == pytest.approx((0.49016, 0.94333), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)  # nothing observed: nothing known


def test_wilson_takes_half_wins_between_neighbours():
    low, high = wilson(4.5, 10)
    assert wilson(4, 10)[0] < low < wilson(5, 10)[0]
    assert wilson(4, 10)[1] < high < wilson(5, 10)[1]


def test_order_ba_swaps_who_assistant_a_is():
    assert winner("ab", "A") == "a" and winner("ab", "B") == "b"
    assert winner("ba", "A") == "b" and winner("ba", "B") == "a"
    assert winner("ba", "tie") == "tie" and winner("ab", None) is None


@pytest.mark.parametrize(
    ("first", "second", "verdict"),
    [
        ("a", "a", "a"),
        ("b", "b", "b"),
        ("tie", "tie", "tie"),
        ("a", "tie", "a"),
        ("tie", "b", "b"),
        ("a", "b", "tie"),  # each order picked a different model: position decided
        ("b", "a", "tie"),
        (None, "a", "unparsable"),
        ("tie", None, "unparsable"),
        (None, None, "unparsable"),
    ],
)
def test_two_order_rule(first, second, verdict):
    assert combine(first, second) == verdict


def test_pairwise_counts_leave_unparsable_out_of_the_win_rate():
    orders = [("a", "a"), ("a", "tie"), ("a", "b"), ("b", "b"), (None, "a"), (None, None)]
    counts = pairwise_counts(orders)
    assert (counts["a_wins"], counts["b_wins"], counts["ties"], counts["unparsable"]) == (
        2,
        1,
        1,
        2,
    )
    assert counts["win_rate_a"] == pytest.approx((2 + 0.5) / 4)
    assert (counts["ci_low"], counts["ci_high"]) == pytest.approx(wilson(2.5, 4))
    assert counts["position_consistency"] == pytest.approx(2 / 4)  # (a,a) and (b,b)
    assert counts["interval"] == "wilson-95"


def test_nothing_readable_gives_no_rate():
    counts = pairwise_counts([(None, "a"), ("b", None)])
    assert counts["unparsable"] == 2 and counts["ties"] == 0
    assert counts["win_rate_a"] is None and counts["position_consistency"] is None


def test_accuracy_excludes_unparsable():
    entry = accuracy(["correct", "incorrect", None, "correct"])
    assert (entry["correct"], entry["graded"], entry["unparsable"]) == (2, 3, 1)
    assert entry["accuracy"] == pytest.approx(2 / 3)
    assert (entry["ci_low"], entry["ci_high"]) == pytest.approx(wilson(2, 3))
