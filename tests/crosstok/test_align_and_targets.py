"""Alignment of Gemma 3's and SmolLM2's tokens of the same text, and what the loss compares at
each student position."""

from __future__ import annotations

import math

import pytest

from retort.crosstok.align import aligned_groups
from retort.crosstok.targets import TeacherTokens, position_targets
from retort.crosstok.vocab_bytes import vocab_bytes
from tests.crosstok.conftest import TEXTS


@pytest.fixture(scope="module")
def tables(gemma_tokenizer, smollm2_tokenizer):
    return vocab_bytes(gemma_tokenizer), vocab_bytes(smollm2_tokenizer)


def tokens_of(tokenizer, table, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids, table.spans(ids, text)


@pytest.mark.parametrize("text", TEXTS)
def test_groups_partition_the_text_and_one_to_one_groups_cover_the_same_bytes(
    text, tables, gemma_tokenizer, smollm2_tokenizer
):
    gemma, smol = tables
    wanted = text.encode("utf-8")
    t_ids, t_ends = tokens_of(gemma_tokenizer, gemma, text)
    s_ids, s_ends = tokens_of(smollm2_tokenizer, smol, text)
    groups = aligned_groups(t_ends, s_ends, len(wanted))
    # every token of both sides in exactly one group, in order
    assert [t for g in groups for t in g.teacher] == list(range(len(t_ids)))
    assert [s for g in groups for s in g.student] == list(range(len(s_ids)))
    for group in groups:
        teacher_bytes = b"".join(gemma.table[t_ids[t]] for t in group.teacher)
        student_bytes = b"".join(smol.table[s_ids[s]] for s in group.student)
        assert teacher_bytes == student_bytes
    matched = sum(g.one_to_one for g in groups)
    assert matched >= 1


def test_english_prose_mostly_matches_one_to_one(tables, gemma_tokenizer, smollm2_tokenizer):
    gemma, smol = tables
    text = TEXTS[0] + " " + TEXTS[1]
    _, t_ends = tokens_of(gemma_tokenizer, gemma, text)
    s_ids, s_ends = tokens_of(smollm2_tokenizer, smol, text)
    groups = aligned_groups(t_ends, s_ends, len(text.encode()))
    share = sum(len(g.student) for g in groups if g.one_to_one) / len(s_ids)
    assert share > 0.6


def test_targets_put_the_teachers_topk_on_the_students_vocabulary_by_bytes(
    tables, gemma_tokenizer, smollm2_tokenizer
):
    gemma, smol = tables
    text = "The year 2024 had 366 days, naïvely."
    t_ids, _ = tokens_of(gemma_tokenizer, gemma, text)
    pieces = [gemma.table[i] for i in t_ids]
    # At each position: the real token, a word both vocabularies have (twice: two teacher
    # entries with the same bytes add up), and bytes no student token has.
    unshared = "▁⁂⁂⁂⁂"
    assert unshared.replace("▁", " ").encode() not in smol.index
    topk = [
        [(p, math.log(0.5)), (b" the", math.log(0.1)), (b" the", math.log(0.1)),
         (unshared.replace("▁", " ").encode(), math.log(0.2))]
        for p in pieces
    ]  # fmt: skip
    teacher = TeacherTokens(pieces, [math.log(0.5)] * len(pieces), topk)
    end = smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    s_ids = smollm2_tokenizer(text, add_special_tokens=False)["input_ids"] + [end]
    targets, counts = position_targets(teacher, s_ids, smol, text)
    assert counts.matched + counts.uld + counts.unaligned == len(s_ids)
    assert targets.topk_ids[-1] == [] and targets.uld_head[-1] == -1  # end of turn: CE only
    the = smol.index[b" the"]
    for position, ids in enumerate(targets.topk_ids):
        if not ids:
            continue
        # the matched token itself, then " the" with both entries' mass, the unshared one gone
        assert ids[0] == s_ids[position]
        assert targets.topk_logprobs[position][ids.index(the)] == pytest.approx(math.log(0.2))
        assert len(ids) == 2 or ids[0] == the
    # groups the two split differently: first position carries the sorted top-k and the
    # teacher's chain (its other tokens' logprobs), the others point at it
    heads = {h for h in targets.uld_head if h >= 0}
    assert heads and counts.uld > 0
    for head in heads:
        members = [p for p, h in enumerate(targets.uld_head) if h == head]
        assert members[0] == head
        logprobs = targets.uld_logprobs[head]
        assert logprobs == sorted(logprobs, reverse=True)
        assert targets.uld_chain[head] <= 0.0


def test_numbers_split_differently_are_reported(tables, smollm2_tokenizer):
    """Gemma 3 and SmolLM2 both write numbers digit by digit; a teacher that groups digits
    (Llama 3 writes up to three per token) aligns them through ULD only, and is warned about."""
    _, smol = tables
    text = "The year 2024"
    pieces = [b"The", b" year", b" ", b"202", b"4"]
    teacher = TeacherTokens(pieces, [-0.5] * 5, [[(p, -0.5)] for p in pieces])
    s_ids = smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]
    targets, counts = position_targets(teacher, s_ids, smol, text)
    # "202" is one teacher token and three student ones; "4" then matches one to one
    assert counts.split_example == ("202", 1, 3)
    assert counts.uld == 3 and targets.uld_head.count(3) == 3
    assert targets.uld_chain[3] == 0.0  # one teacher token: no chain


def test_a_row_whose_tokens_do_not_spell_its_text_gets_no_targets(tables, smollm2_tokenizer):
    _, smol = tables
    teacher = TeacherTokens([b"Hi"], [0.0], [[(b"Hi", 0.0)]])
    s_ids = smollm2_tokenizer("Hello", add_special_tokens=False)["input_ids"]
    targets, counts = position_targets(teacher, s_ids, smol, "Hi")
    assert counts.rows_unspelled == 1 and counts.matched == 0
    assert all(not ids for ids in targets.topk_ids)


def test_teacher_text_beyond_the_completion_is_not_aligned(tables, smollm2_tokenizer):
    """A server's tokens may run past its text (a stop string it trimmed): groups stop at the
    bytes both spell alike."""
    _, smol = tables
    text = "Yes. Sto"
    pieces = [b"Yes", b".", b" Stop"]  # the text was cut inside the last token
    teacher = TeacherTokens(pieces, [0.0] * 3, [[(p, 0.0)] for p in pieces])
    s_ids = smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]
    _, counts = position_targets(teacher, s_ids, smol, text)
    assert counts.matched == 2  # "Yes" and "."; " Stop" ends beyond the shared bytes


def test_a_dummy_prefix_teachers_first_alternatives_land_on_the_students_unspaced_tokens(
    tables, smollm2_tokenizer
):
    _, smol = tables
    text = "Paris is big"
    s_ids = smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]
    # a SentencePiece teacher with a dummy prefix: its first token and alternatives carry a
    # space the text does not start with
    pieces = [b" Paris", b" is", b" big"]
    topk = [[(b" Paris", math.log(0.6)), (b" London", math.log(0.3))]]
    topk += [[(piece, -0.1)] for piece in pieces[1:]]
    targets, counts = position_targets(TeacherTokens(pieces, [-0.5] * 3, topk), s_ids, smol, text)
    assert counts.matched == 3
    assert targets.topk_ids[0] == [s_ids[0], smol.index[b"London"]]
    assert targets.topk_ids[1] == [s_ids[1]]  # later positions keep their spaces


def test_a_dummy_prefix_students_first_token_gets_the_teachers_alternatives_with_a_space():
    from retort.crosstok.vocab_bytes import VocabBytes

    # the student writes "Paris is" as " Paris", " is" (dummy prefix); the teacher does not
    table = [b" Paris", b" is", b"Paris", b" London", b"London"]
    student = VocabBytes(table, {piece: i for i, piece in enumerate(table)})
    teacher = TeacherTokens(
        [b"Paris", b" is"],
        [-0.5, -0.1],
        [[(b"Paris", math.log(0.6)), (b"London", math.log(0.3))], [(b" is", -0.1)]],
    )
    targets, counts = position_targets(teacher, [0, 1], student, "Paris is")
    assert counts.matched == 2
    assert targets.topk_ids == [[0, 3], [1]]
