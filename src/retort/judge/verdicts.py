"""Reading a verdict out of a judge's reply.

A pairwise verdict is ``[[A]]``, ``[[B]]`` or ``[[C]]`` (a tie; ``[[TIE]]`` is read as one too);
a graded one ``[[CORRECT]]`` or ``[[INCORRECT]]``. Case and spaces inside the brackets do not
matter. A reply must name exactly one verdict, as often as it likes: a reply without one, or
with two different ones (a judge that repeats the instructions writes all three), is
*unparsable*, and an unparsable reply is never read as a tie.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PAIRWISE_MARKS = {"A": "A", "B": "B", "C": "tie", "TIE": "tie"}
GRADE_MARKS = {"CORRECT": "correct", "INCORRECT": "incorrect"}


@dataclass(frozen=True)
class Verdict:
    """What a reply says: ``label`` (``A``/``B``/``tie`` or ``correct``/``incorrect``), or
    None with the ``reason`` it could not be read."""

    label: str | None
    reason: str | None = None

    @property
    def parsed(self) -> bool:
        return self.label is not None


def parse_pairwise(reply: str) -> Verdict:
    """The verdict of a pairwise judgment: ``A``, ``B``, ``tie`` or unparsable."""
    return _parse(reply, PAIRWISE_MARKS)


def parse_grade(reply: str) -> Verdict:
    """The verdict of a graded judgment: ``correct``, ``incorrect`` or unparsable."""
    return _parse(reply, GRADE_MARKS)


def _parse(reply: str, marks: dict[str, str]) -> Verdict:
    pattern = r"\[\[\s*(" + "|".join(marks) + r")\s*\]\]"
    found = [m.upper() for m in re.findall(pattern, reply, flags=re.IGNORECASE)]
    labels = {marks[m] for m in found}
    if not labels:
        expected = ", ".join(f"[[{m}]]" for m in marks if m != "TIE")
        return Verdict(None, f"no verdict ({expected})")
    if len(labels) > 1:
        named = " and ".join(f"[[{m}]]" for m in dict.fromkeys(found))
        return Verdict(None, f"ambiguous: {named}")
    return Verdict(labels.pop())
