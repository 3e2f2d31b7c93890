"""How tokens appear in logprobs: their text, their raw bytes, or vLLM's ``token_id:N``."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: the printable character that stands for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class TokenText:
    """Text and bytes of token ids for one tokenizer, cached."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.byte_level = backend is not None and "ByteLevel" in str(backend.decoder)
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def __call__(self, token_id: int, as_id: bool = False) -> tuple[str, list[int]]:
        """``(text, utf-8 bytes)`` of one token; ``as_id`` gives vLLM's ``token_id:N`` text."""
        if token_id not in self._cache:
            text = self.tokenizer.decode([token_id])
            raw = None
            if self.byte_level:
                piece = self.tokenizer.convert_ids_to_tokens(token_id)
                decoder = _byte_decoder()
                if piece is not None and all(c in decoder for c in piece):
                    raw = [decoder[c] for c in piece]
            self._cache[token_id] = (text, raw if raw is not None else list(text.encode()))
        text, raw = self._cache[token_id]
        return (f"token_id:{token_id}" if as_id else text), raw
