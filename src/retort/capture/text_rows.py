"""Rows and fingerprint of a *text store*: what a teacher without a tokenizer gives.

A text store holds no token ids: per row the chat messages sent, the completion text, the finish
reason and the usage the server reported, and with ``--top-k`` > 0 the teacher's tokens and
top-k per position as strings, their UTF-8 bytes (None where the server sent none) and
logprobs. Its fingerprint says ``teacher_kind: "text"`` and ``tokenizer: null``; a token store's
fingerprint has no ``teacher_kind`` (stores made before text stores existed resume unchanged).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from retort.capture.prompts import PromptRecord
from retort.teachers.http_text import KIND, TextHTTPTeacher, TextReply
from retort.teachers.protocol import Sampling

CODEC = "text-plain-f32"  # token strings, bytes, float32 logprobs; nothing packed

TEXT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("prompt", pa.string()),  # text, or chat messages as JSON (as a token store)
        ("system", pa.string()),
        ("reference", pa.string()),
        ("messages", pa.string()),  # the chat turns sent to the server, as JSON
        ("completion", pa.string()),
        ("finish_reason", pa.string()),
        ("tokens", pa.list_(pa.string())),  # the teacher's tokens (null without top-k)
        ("token_bytes", pa.list_(pa.binary())),
        ("token_logprobs", pa.list_(pa.float32())),
        ("topk_tokens", pa.list_(pa.list_(pa.string()))),  # (tokens, k), ranked
        ("topk_bytes", pa.list_(pa.list_(pa.binary()))),  # (tokens, k)
        ("topk_logprobs", pa.list_(pa.list_(pa.float32()))),  # (tokens, k)
        ("usage", pa.struct([("prompt_tokens", pa.int32()), ("completion_tokens", pa.int32())])),
        ("latency_ms", pa.float32()),
    ]
)


def is_text_store(fingerprint: dict[str, Any]) -> bool:
    """Whether a store's fingerprint is a text teacher's (no tokenizer, no token ids)."""
    return fingerprint.get("teacher_kind") == KIND


def text_fingerprint(
    teacher: TextHTTPTeacher, sampling: Sampling, top_k: int, teacher_names: Any
) -> dict[str, Any]:
    """Everything that makes two text captures comparable (``teacher_names`` splits the
    teacher's identity into name and weights, as for a token store)."""
    name, weights = teacher_names(teacher.identity())
    return {
        "teacher": name,
        "teacher_weights": weights,
        "teacher_kind": KIND,
        "tokenizer": None,
        "endpoint": teacher.endpoint,
        "mode": "generate",
        **sampling.as_dict(),
        "decoding": teacher.decoding,
        "top_k": top_k,
        "codec": CODEC,
    }


def text_row(record: PromptRecord, turns: list[dict[str, Any]], reply: TextReply) -> dict:
    """One store row of a text teacher's reply."""
    out = reply.generation
    return {
        "id": record.id,
        "prompt": record.canonical(),
        "system": record.system,
        "reference": record.reference,
        "messages": json.dumps(turns, ensure_ascii=False, separators=(",", ":")),
        "completion": out.completion,
        "finish_reason": out.finish_reason,
        "tokens": out.tokens,
        "token_bytes": out.token_bytes,
        "token_logprobs": out.token_logprobs,
        "topk_tokens": out.topk_tokens,
        "topk_bytes": out.topk_bytes,
        "topk_logprobs": out.topk_logprobs,
        "usage": reply.usage,
        "latency_ms": 0.0,
    }


def completion_tokens(row: dict[str, Any]) -> int:
    """A text row's completion length in the teacher's tokens: as the server reported it, else
    the tokens it returned, else 0 (unknown)."""
    reported = (row.get("usage") or {}).get("completion_tokens")
    return int(reported) if reported is not None else len(row.get("tokens") or [])
