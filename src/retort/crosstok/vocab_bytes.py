"""The bytes behind token ids: what lets two tokenizers' tokens of one text be compared.

A token's *string* is not its text: byte-level BPE (GPT-2, Llama 3, SmolLM2) writes each byte as
a printable stand-in character (a space is ``Ġ``), SentencePiece-style vocabularies (Gemma,
Llama 2) write a space as ``▁`` and bytes outside the vocabulary as ``<0xNN>``. Decoding ids one
at a time does not help either: decoders drop a leading space or return ``�`` for half of a
multi-byte character. So the bytes are read from the vocabulary strings by the scheme the
tokenizer's own decoder declares. Special tokens (``<|im_end|>``, ``<bos>``) stand for no text:
None.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from retort.crosstok.align import byte_ends
from retort.errors import ModelError

BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")
SPACE_MARK = "\u2581"  # SentencePiece's ▁


def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: stand-in character → byte value.

    Printable Latin-1 bytes stand for themselves; the other 68 (controls, space, soft hyphen)
    are moved to code points from 256 up, in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    alphabet = {chr(b): b for b in printable}
    shifted = 0
    for value in range(256):
        if value not in printable:
            alphabet[chr(256 + shifted)] = value
            shifted += 1
    return alphabet


@dataclass(frozen=True)
class VocabBytes:
    """``table[id]``: the bytes token ``id`` adds to the text (None: a special token), and
    ``index``: bytes → the id that stands for them (the lowest, where several do)."""

    table: list[bytes | None]
    index: dict[bytes, int]

    def spans(self, ids: list[int], text: str) -> list[int] | None:
        """Byte end of each token of ``ids`` = tokenizer(``text``) in ``text``'s UTF-8; None
        when the tokens do not spell the text (a normalizer changed it, a special token).

        A tokenizer that puts a space before the text (SentencePiece's "dummy prefix") spells
        ``" " + text``; its first token is then read without that space.
        """
        pieces = [self.table[i] if 0 <= i < len(self.table) else None for i in ids]
        if any(p is None for p in pieces):
            return None
        wanted = text.encode("utf-8")
        spelled = b"".join(pieces)
        if spelled != wanted:
            if not (spelled[:1] == b" " and spelled[1:] == wanted):
                return None
            pieces[0] = pieces[0][1:]
        return byte_ends(pieces)


def vocab_bytes(tokenizer: Any) -> VocabBytes:
    """The byte table of a fast (``tokenizers``-backed) Hugging Face tokenizer.

    Raises:
        ModelError: a slow tokenizer, or a decoder of a scheme not known here.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelError(
            f"{type(tokenizer).__name__}: cross-tokenizer distillation needs a fast tokenizer "
            "(tokenizer.json); load it with use_fast=True or convert it"
        )
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    kinds = _decoder_kinds(decoder)
    vocab = backend.get_vocab(with_added_tokens=True)
    special = {a.content for a in tokenizer.added_tokens_decoder.values() if a.special}
    special |= set(tokenizer.all_special_tokens)
    table: list[bytes | None] = [None] * (max(vocab.values()) + 1)
    if "ByteLevel" in kinds:
        alphabet = byte_level_alphabet()
        to_bytes = lambda s: _byte_level(s, alphabet)  # noqa: E731
    elif kinds & {"Metaspace", "ReplaceSpaceMark", "ByteFallback"} or not kinds:
        fallback = "ByteFallback" in kinds
        to_bytes = lambda s: _sentencepiece(s, fallback)  # noqa: E731
    else:
        raise ModelError(
            f"{type(tokenizer).__name__}: its decoder ({', '.join(sorted(kinds))}) is not one "
            "retort reads bytes from (byte-level BPE or SentencePiece); use another student"
        )
    for token, token_id in vocab.items():
        table[token_id] = None if token in special else to_bytes(token)
    index: dict[bytes, int] = {}
    for token_id, piece in enumerate(table):
        if piece:
            index.setdefault(piece, token_id)
    return VocabBytes(table, index)


def _decoder_kinds(decoder: dict[str, Any]) -> set[str]:
    kinds = set()
    for part in decoder.get("decoders", [decoder]) if decoder else []:
        kind = part.get("type", "")
        pattern = (part.get("pattern") or {}).get("String")
        if kind == "Replace" and pattern == SPACE_MARK:
            kind = "ReplaceSpaceMark"
        if kind not in ("Fuse", "Strip"):  # glue steps: no say in what a token's bytes are
            kinds.add(kind)
    return kinds


def _byte_level(token: str, alphabet: dict[str, int]) -> bytes:
    try:
        return bytes(alphabet[c] for c in token)
    except KeyError:  # an added token written as plain text (not in the byte alphabet)
        return token.encode("utf-8")


def _sentencepiece(token: str, byte_fallback: bool) -> bytes:
    if byte_fallback:
        match = BYTE_FALLBACK.fullmatch(token)
        if match:
            return bytes([int(match.group(1), 16)])
    return token.replace(SPACE_MARK, " ").encode("utf-8")
