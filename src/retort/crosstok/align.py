"""Groups of teacher and student tokens that cover the same bytes of one text.

Both tokenizations are walked together by byte end: the side whose token ends first advances,
and a group closes where both end at the same byte, the points where the two tokenizers agree
on a split. A group of one teacher and one student token covers the same bytes on both sides,
so the two next-token distributions there are conditioned on the same text and can be compared
token for token. Groups past ``limit`` (the bytes both sides spell alike) are not formed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    """Teacher positions ``teacher`` and student positions ``student`` (ranges, non-empty)."""

    teacher: range
    student: range

    @property
    def one_to_one(self) -> bool:
        return len(self.teacher) == 1 and len(self.student) == 1


def aligned_groups(teacher_ends: list[int], student_ends: list[int], limit: int) -> list[Group]:
    """The groups, in text order, of two tokenizations given by each token's byte end."""
    groups: list[Group] = []
    t = s = t_start = s_start = 0
    while t < len(teacher_ends) and s < len(student_ends):
        t_end, s_end = teacher_ends[t], student_ends[s]
        if max(t_end, s_end) > limit:
            break
        if t_end < s_end:
            t += 1
        elif s_end < t_end:
            s += 1
        else:
            t, s = t + 1, s + 1
            groups.append(Group(range(t_start, t), range(s_start, s)))
            t_start, s_start = t, s
    return groups


def byte_ends(pieces: list[bytes]) -> list[int]:
    """Each token's byte end in the text its ``pieces`` spell."""
    return list(itertools.accumulate(map(len, pieces)))


def common_prefix(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix of two byte strings."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)
