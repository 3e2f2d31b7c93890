"""The bytes behind token ids, read from the vocabulary by the tokenizer's declared scheme,
checked against what the tokenizers themselves say (their character offsets)."""

from __future__ import annotations

import pytest
from tokenizers import pre_tokenizers

from retort.crosstok.vocab_bytes import VocabBytes, byte_level_alphabet, vocab_bytes
from tests.crosstok.conftest import TEXTS


def test_the_byte_level_alphabet_is_the_tokenizers_librarys():
    alphabet = byte_level_alphabet()
    assert set(alphabet) == set(pre_tokenizers.ByteLevel.alphabet())
    assert sorted(alphabet.values()) == list(range(256))
    assert alphabet["Ġ"] == ord(" ") and alphabet["Ċ"] == ord("\n") and alphabet["A"] == 65


@pytest.mark.parametrize("name", ["smollm2_tokenizer", "gemma_tokenizer"])
@pytest.mark.parametrize("text", TEXTS)
def test_token_bytes_spell_real_text_and_end_where_the_tokenizer_says(name, text, request):
    tokenizer = request.getfixturevalue(name)
    table = vocab_bytes(tokenizer)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ends = table.spans(encoded["input_ids"], text)
    assert ends is not None and ends[-1] == len(text.encode("utf-8"))
    # Where a token holds whole characters, its byte end is its character end in bytes (a
    # byte-level token may hold half of a character, whose offsets cannot say where it ends).
    whole = [
        (len(text[:char_end].encode("utf-8")), end)
        for token_id, (_, char_end), end in zip(
            encoded["input_ids"], encoded["offset_mapping"], ends, strict=True
        )
        if _decodes(table.table[token_id])
    ]
    assert whole
    assert [said for said, _ in whole] == [ours for _, ours in whole]


def _decodes(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_special_tokens_have_no_bytes_and_byte_fallback_tokens_are_one_byte(
    smollm2_tokenizer, gemma_tokenizer
):
    smol, gemma = vocab_bytes(smollm2_tokenizer), vocab_bytes(gemma_tokenizer)
    assert smol.table[smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>")] is None
    assert gemma.table[gemma_tokenizer.bos_token_id] is None
    assert gemma.table[gemma_tokenizer.convert_tokens_to_ids("<0xE2>")] == b"\xe2"
    assert gemma.table[gemma_tokenizer.convert_tokens_to_ids("▁the")] == b" the"
    assert smol.table[smollm2_tokenizer.convert_tokens_to_ids("Ġthe")] == b" the"
    assert smol.index[b" the"] == smollm2_tokenizer.convert_tokens_to_ids("Ġthe")


def test_a_dummy_prefix_space_is_read_off_the_first_token_and_a_changed_text_is_refused():
    table = VocabBytes([b" Hello", b" world", b"!"], {})
    assert table.spans([0, 1, 2], "Hello world!") == [5, 11, 12]  # " Hello world!" spelled
    assert table.spans([0, 1], "Hello there") is None  # the tokens spell another text
