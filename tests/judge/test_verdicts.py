"""Reading verdicts: every accepted form, and everything else unparsable (never a tie)."""

from __future__ import annotations

import pytest

from retort.judge.verdicts import parse_grade, parse_pairwise


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("[[A]]", "A"),
        ("Assistant B is more accurate. [[B]]", "B"),
        ("Both are equally good.\n\nFinal verdict: [[C]]", "tie"),
        ("[[TIE]]", "tie"),
        ("[[ a ]]", "A"),
        ('My verdict: "[[b]]"', "B"),
        ("**[[A]]** — as said, [[A]]", "A"),  # one verdict named twice is still one
    ],
)
def test_pairwise_forms(reply, label):
    verdict = parse_pairwise(reply)
    assert verdict.parsed and verdict.label == label and verdict.reason is None


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", "no verdict"),
        ("Assistant A is better.", "no verdict"),
        ("[A]", "no verdict"),  # single brackets are not the format
        ("[[D]]", "no verdict"),
        ("[[AB]]", "no verdict"),
        ("ſ×ÿ garbage ]][[", "no verdict"),
        ('"[[A]]" if A is better, "[[B]]" if B is better', "ambiguous: [[A]] and [[B]]"),
        ("[[C]] ... no wait [[A]]", "ambiguous: [[C]] and [[A]]"),
    ],
)
def test_pairwise_garbage_is_unparsable_not_a_tie(reply, reason):
    verdict = parse_pairwise(reply)
    assert verdict.label is None and not verdict.parsed
    assert verdict.reason.startswith(reason)


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("It matches the reference. [[CORRECT]]", "correct"),
        ("Wrong city. [[INCORRECT]]", "incorrect"),
        ("[[ incorrect ]]", "incorrect"),
        ("[[Correct]]", "correct"),
    ],
)
def test_grade_forms(reply, label):
    assert parse_grade(reply).label == label


@pytest.mark.parametrize(
    "reply", ["", "correct", "[[A]]", "[[CORRECT]] or [[INCORRECT]]", "[[RIGHT]]"]
)
def test_grade_garbage_is_unparsable(reply):
    assert parse_grade(reply).label is None
