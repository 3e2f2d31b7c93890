"""From judgments to numbers: the two-order rule, win rate, accuracy and Wilson intervals.

Every prompt is judged twice, A's answer shown first (order ``ab``) and B's shown first
(``ba``), each order's verdict naming a winner (``a``, ``b`` or ``tie``). The prompt's verdict:

    both orders agree            → that verdict
    one winner, the other a tie  → the winner
    a in one order, b in other   → tie (the position decided, not the answers)
    either order unparsable      → unparsable (excluded from the win rate)

The win rate of A counts a tie as half a win: (wins + ties/2) / (wins + losses + ties). Its
95% interval is Wilson's score interval on that proportion; a prompt's score then takes the
values 0, ½ and 1, whose variance is at most the p(1−p) the interval assumes, so with ties the
interval is, if anything, wider than it needs to be.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from statistics import NormalDist
from typing import Any

Z95 = NormalDist().inv_cdf(0.975)  # 1.959963984540054
INTERVAL = "wilson-95"
# Which model each order's verdict names: in order "ba" assistant A is model b.
SHOWN_FIRST = {"ab": {"A": "a", "B": "b"}, "ba": {"A": "b", "B": "a"}}


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion ``successes / n``; ``(0, 1)`` when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def winner(order: str, label: str | None) -> str | None:
    """The model (``a``, ``b``, ``tie``) one order's verdict (``A``, ``B``, ``tie``) names."""
    if label is None:
        return None
    return "tie" if label == "tie" else SHOWN_FIRST[order][label]


def combine(first: str | None, second: str | None) -> str:
    """A prompt's verdict from its two orders' winners (None: that order was unparsable)."""
    if first is None or second is None:
        return "unparsable"
    if first == second:
        return first
    if "tie" in (first, second):
        return first if second == "tie" else second
    return "tie"  # each order preferred whichever answer it showed in one position


def pairwise_counts(orders: Iterable[tuple[str | None, str | None]]) -> dict[str, Any]:
    """The ``pairwise`` block of judge.json from each prompt's (order ab, order ba) winners.

    ``win_rate_a`` and ``position_consistency`` (the share of readable prompts whose two
    orders agree) are None when no prompt could be read.
    """
    counts = {"a": 0, "b": 0, "tie": 0, "unparsable": 0}
    agreeing = 0
    for first, second in orders:
        counts[combine(first, second)] += 1
        agreeing += first is not None and first == second
    decided = counts["a"] + counts["b"] + counts["tie"]
    score = counts["a"] + counts["tie"] / 2
    low, high = wilson(score, decided)
    return {
        "a_wins": counts["a"],
        "b_wins": counts["b"],
        "ties": counts["tie"],
        "unparsable": counts["unparsable"],
        "win_rate_a": score / decided if decided else None,
        "ci_low": low,
        "ci_high": high,
        "interval": INTERVAL,
        "position_consistency": agreeing / decided if decided else None,
    }


def accuracy(labels: Iterable[str | None]) -> dict[str, Any]:
    """One model's ``graded`` entry from its graded verdicts (None: unparsable, left out)."""
    labels = list(labels)
    correct = sum(label == "correct" for label in labels)
    graded = sum(label is not None for label in labels)
    low, high = wilson(correct, graded)
    return {
        "correct": correct,
        "graded": graded,
        "unparsable": len(labels) - graded,
        "accuracy": correct / graded if graded else None,
        "ci_low": low,
        "ci_high": high,
    }
