"""A token store (a local teacher's ids and top-k ids) read as a text store, for a student of
another tokenizer: the teacher's tokenizer turns every id into its bytes.

Per row: the conversation the teacher answered (its prompt, or its chat turns, with the system
prompt), the completion as the text its tokens spell (the stored text may have been cleaned up
by the decoder; the tokens are what the top-k belongs to), and per position the token's bytes,
its logprob (from its own top-k entry; below the top-k, the lowest listed logprob, an upper
bound) and the top-k as bytes. Special tokens (the end of turn) have no bytes: they spell
nothing and, in a top-k, join the tail bucket.
"""

from __future__ import annotations

import json
from typing import Any

from retort.crosstok.vocab_bytes import vocab_bytes
from retort.teachers.chat import chat_messages


def token_rows_as_text(rows: list[dict[str, Any]], teacher_tokenizer: Any) -> list[dict[str, Any]]:
    """``rows`` of a token store in the shape of a text store's rows."""
    table = vocab_bytes(teacher_tokenizer).table
    converted = []
    for row in rows:
        ids = list(row["completion_token_ids"])
        topk_ids = row.get("topk_ids") or [[] for _ in ids]
        topk_logprobs = row.get("topk_logprobs") or [[] for _ in ids]
        pieces = [_bytes(table, i) for i in ids]
        topk_bytes, topk_values, chosen = [], [], []
        for token_id, candidates, logprobs in zip(ids, topk_ids, topk_logprobs, strict=True):
            listed = dict(zip(candidates, logprobs, strict=True))
            chosen.append(listed.get(token_id, min(logprobs, default=0.0)))
            kept = [(table[c], lp) for c, lp in listed.items() if _bytes(table, c)]
            topk_bytes.append([piece for piece, _ in kept])
            topk_values.append([lp for _, lp in kept])
        converted.append(
            {
                **row,
                "messages": json.dumps(_turns(row), ensure_ascii=False),
                "completion": b"".join(pieces).decode("utf-8", "ignore"),
                "tokens": [p.decode("utf-8", "replace") for p in pieces],
                "token_bytes": pieces,
                "token_logprobs": chosen,
                "topk_tokens": [[p.decode("utf-8", "replace") for p in ps] for ps in topk_bytes],
                "topk_bytes": topk_bytes,
                "topk_logprobs": topk_values,
            }
        )
    return converted


def _bytes(table: list[bytes | None], token_id: int) -> bytes:
    piece = table[token_id] if 0 <= token_id < len(table) else None
    return piece or b""


def _turns(row: dict[str, Any]) -> list[dict[str, Any]]:
    prompt = row.get("prompt") or ""
    messages = None
    if prompt.startswith("["):
        try:
            parsed = json.loads(prompt)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(t, dict) for t in parsed):
            messages = parsed
    return chat_messages(None if messages else prompt, messages, row.get("system"))
