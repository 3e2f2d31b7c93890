"""What the cross-tokenizer loss compares at each of the student's completion positions.

Given the teacher's tokens of a completion (their bytes, the logprob of each, and the top-k at
each position, as byte strings with logprobs) and the student's tokens of the same text:

- **matched** (one teacher token and one student token over the same bytes): the teacher's
  top-k moved onto the student's vocabulary by exact byte match; entries the student has no
  token for join the tail bucket (on both sides: ``losses.sparse`` reads ``-inf`` so), and
  entries that land on the same student token are added up. Trained by the run's ``kind``.
- **ULD group** (any other group: a word one side splits and the other does not, digits split
  differently): at the group's first student position, the teacher's first-position top-k
  *probabilities*, sorted, against the student's sorted top-k (Universal Logit Distillation,
  no vocabulary mapping needed). As in GOLD, each side's distribution is multiplied by the
  probability of the rest of the group's actual tokens (chain rule), so the group is compared
  as a whole. The teacher's factor is computed here (``uld_chain``); the student's at training
  time from its own positions that point at the group's first one (``uld_head``).
- nothing (past the bytes both sides spell alike, the student's end-of-turn token): cross-entropy
  only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from retort.crosstok.align import aligned_groups, byte_ends, common_prefix
from retort.crosstok.vocab_bytes import VocabBytes


@dataclass
class TeacherTokens:
    """The teacher's completion: per position its bytes, its logprob, and its top-k entries
    ``[(bytes, logprob), ...]`` (empty: none returned there)."""

    pieces: list[bytes]
    logprobs: list[float]
    topk: list[list[tuple[bytes, float]]]


@dataclass
class PositionTargets:
    """Per student completion position (lists of equal length)."""

    topk_ids: list[list[int]]
    topk_logprobs: list[list[float]]
    uld_head: list[int]  # -1: not in a ULD group; else the group's first position
    uld_logprobs: list[list[float]]  # at a group's first position: the teacher's sorted top-k
    uld_chain: list[float]  # at a group's first position: log P(teacher's other tokens)

    def row_fields(self) -> dict[str, list]:
        """The targets as a training row's columns (what ``examples_from_rows`` reads)."""
        return {
            "topk_ids": self.topk_ids,
            "topk_logprobs": self.topk_logprobs,
            "uld_head": self.uld_head,
            "uld_logprobs": self.uld_logprobs,
            "uld_chain": self.uld_chain,
        }


@dataclass
class AlignmentCounts:
    """Student completion tokens by what they train with, over a store."""

    matched: int = 0
    uld: int = 0
    unaligned: int = 0
    rows_unspelled: int = 0  # rows whose tokens did not spell their text (KD skipped)
    split_example: tuple[str, int, int] | None = field(default=None)  # (text, teacher n, student n)

    def add(self, other: AlignmentCounts) -> None:
        self.matched += other.matched
        self.uld += other.uld
        self.unaligned += other.unaligned
        self.rows_unspelled += other.rows_unspelled
        self.split_example = self.split_example or other.split_example


def position_targets(
    teacher: TeacherTokens,
    student_ids: list[int],
    student_vocab: VocabBytes,
    text: str,
) -> tuple[PositionTargets, AlignmentCounts]:
    """Targets for ``student_ids`` (the student's tokens of ``text``, possibly followed by an
    end-of-turn token, which gets none)."""
    n = len(student_ids)
    out = PositionTargets(
        topk_ids=[[] for _ in range(n)],
        topk_logprobs=[[] for _ in range(n)],
        uld_head=[-1] * n,
        uld_logprobs=[[] for _ in range(n)],
        uld_chain=[0.0] * n,
    )
    counts = AlignmentCounts()
    wanted = text.encode("utf-8")
    student_ends = _spelled_ends(student_vocab, student_ids, text)
    if student_ends is None:
        counts.rows_unspelled, counts.unaligned = 1, n
        return out, counts
    teacher_pieces = _without_dummy_prefix(teacher.pieces, wanted)
    # A dummy-prefix space belongs to the first position's alternatives too. Its top-k is moved
    # onto the student's first token as that token is written: the teacher's " Paris" there is a
    # plain student's "Paris", and a plain teacher's "Paris" a dummy-prefix student's " Paris".
    teacher_space = teacher_pieces is not teacher.pieces
    student_space = (
        bool(student_ends) and len(student_vocab.table[student_ids[0]]) > student_ends[0]
    )
    teacher_ends = byte_ends(teacher_pieces)
    limit = common_prefix(b"".join(teacher_pieces), wanted)
    for group in aligned_groups(teacher_ends, student_ends, limit):
        first_t, first_s = group.teacher[0], group.student[0]
        entries = teacher.topk[first_t]
        if not entries:
            continue
        if first_t == 0 and teacher_space != student_space:
            entries = _respaced(entries, add=student_space)
        if group.one_to_one:
            out.topk_ids[first_s], out.topk_logprobs[first_s] = _on_student_vocab(
                entries, student_vocab
            )
            counts.matched += 1
            continue
        for position in group.student:
            out.uld_head[position] = first_s
        out.uld_logprobs[first_s] = sorted((lp for _, lp in entries), reverse=True)
        out.uld_chain[first_s] = float(sum(teacher.logprobs[t] for t in group.teacher[1:]))
        counts.uld += len(group.student)
        if counts.split_example is None:
            start = student_ends[first_s - 1] if first_s else 0
            covered = wanted[start : student_ends[group.student[-1]]]
            if any(chr(b).isdigit() for b in covered):
                example = covered.decode("utf-8", "replace")
                counts.split_example = (example, len(group.teacher), len(group.student))
    counts.unaligned = n - counts.matched - counts.uld
    return out, counts


def _spelled_ends(vocab: VocabBytes, ids: list[int], text: str) -> list[int] | None:
    """Byte ends of the student's tokens; a trailing end-of-turn token (no bytes) is left out."""
    body = ids
    while body and (body[-1] >= len(vocab.table) or vocab.table[body[-1]] is None):
        body = body[:-1]
    return vocab.spans(body, text)


def _without_dummy_prefix(pieces: list[bytes], wanted: bytes) -> list[bytes]:
    """A teacher whose first token carries a space the text does not start with (SentencePiece's
    dummy prefix, returned as part of the token) is read without it."""
    if pieces and pieces[0][:1] == b" " and wanted[:1] != b" ":
        return [pieces[0][1:], *pieces[1:]]
    return pieces


def _respaced(entries: list[tuple[bytes, float]], add: bool) -> list[tuple[bytes, float]]:
    """``entries`` with a leading space added to each (``add``) or taken off where there is one."""
    if add:
        return [(b" " + piece, logprob) for piece, logprob in entries]
    return [(piece.removeprefix(b" "), logprob) for piece, logprob in entries]


def _on_student_vocab(
    entries: list[tuple[bytes, float]], vocab: VocabBytes
) -> tuple[list[int], list[float]]:
    """The teacher's top-k as (student id, logprob), entries with no student token dropped and
    entries on the same student token summed."""
    merged: dict[int, float] = {}
    for piece, logprob in entries:
        student_id = vocab.index.get(piece)
        if student_id is None:
            continue
        old = merged.get(student_id, -math.inf)
        merged[student_id] = float(np.logaddexp(old, logprob))
    return list(merged), list(merged.values())
