"""Training on a text store: sequence-level KD for a student of any tokenizer.

A text store (``retort generate --endpoint chat`` without ``--tokenizer``) holds the teacher's
messages and completion text, no token ids. Its rows become training rows in the *student's*
tokens: the messages rendered with the student's chat template up to its assistant header
(the prompt, masked from the loss), then the completion text, and after a reply that ended its
turn (``finish_reason == "stop"``) the student's end-of-turn token, so the student learns to
stop. A completion cut by the length cap or a stop string gets no end token: the teacher did not
end there.

``--objective sft`` trains cross-entropy on that text. ``--objective cross_tokenizer`` also
distills the teacher's top-k (token strings and their bytes), aligned onto the student's
positions by byte offsets (crosstok/targets.py).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from retort.config import DistillConfig
from retort.crosstok.targets import AlignmentCounts, TeacherTokens, position_targets
from retort.crosstok.vocab_bytes import vocab_bytes
from retort.errors import StoreError
from retort.teachers.chat import end_of_turn_id, render_prompt

log = logging.getLogger(__name__)
TEXT_OBJECTIVES = ("sft", "cross_tokenizer")


def refuse_teacher_objectives(config: DistillConfig, data: Path, top_k: int) -> None:
    """A text store has no teacher token ids or logits: ``sft`` trains on its text, and
    ``cross_tokenizer`` on its top-k strings when it holds them (``top_k`` > 0)."""
    works = "--objective cross_tokenizer (its top-k, aligned by bytes) or --objective sft"
    if top_k == 0:
        works = "--objective sft (the student learns the teacher's text in its own tokens)"
    if config.objective not in TEXT_OBJECTIVES:
        raise StoreError(
            f"{data}: a text store (captured without a tokenizer) has no teacher token ids or "
            f"logits for --objective {config.objective}; use {works}"
        )
    if config.objective == "cross_tokenizer" and top_k == 0 and not config.live_top_k:
        raise StoreError(
            f"{data}: a text store captured without top-k (top_k 0): --objective cross_tokenizer "
            "has no teacher distribution to distill; capture again with --top-k 20, score it "
            "with a local teacher (--teacher SPEC --live-top-k 20), or use --objective sft"
        )
    if config.hidden_weight > 0:
        raise StoreError(
            f"{data}: a text store (captured without a tokenizer) has no token ids for the "
            f"teacher's hidden states; drop --hidden-weight (use {works})"
        )


def rows_in_student_tokens(
    rows: list[dict[str, Any]], tokenizer: Any, data: Path, cross_tokenizer: bool = False
) -> list[dict[str, Any]]:
    """The text store's rows with ``prompt_token_ids`` and ``completion_token_ids`` in the
    student's tokens (see the module docstring for what goes in); with ``cross_tokenizer``
    also the teacher's top-k on the student's positions, else none.

    Raises:
        StoreError: a row whose messages are not JSON turns, or that the student's chat
            template refuses; the message names the row.
    """
    end = end_of_turn_id(tokenizer)
    converted = []
    for row in rows:
        turns = _turns(row, data)
        try:
            prompt_ids = render_prompt(tokenizer, turns)
        except Exception as exc:  # jinja TemplateError and kin
            raise StoreError(
                f"{data}: row {row['id']!r}: the student's chat template refused its messages "
                f"({exc}); choose a student whose template takes these roles"
            ) from None
        completion_ids = tokenizer(row["completion"] or "", add_special_tokens=False)["input_ids"]
        if row["finish_reason"] == "stop" and end is not None:
            completion_ids.append(end)
        converted.append(
            {
                **row,
                "prompt_token_ids": prompt_ids,
                "completion_token_ids": completion_ids,
                "topk_ids": None,
                "topk_logprobs": None,
            }
        )
    if cross_tokenizer:
        _add_aligned_topk(rows, converted, tokenizer)
    return converted


def _add_aligned_topk(
    stored: list[dict[str, Any]], converted: list[dict[str, Any]], tokenizer: Any
) -> None:
    """Each converted row's teacher top-k (read from its ``stored`` row) on the student's
    positions (crosstok/targets.py), in place, and one log line saying how they train."""
    student_vocab = vocab_bytes(tokenizer)
    counts = AlignmentCounts()
    for original, row in zip(stored, converted, strict=True):
        targets, row_counts = position_targets(
            _teacher_tokens(original),
            row["completion_token_ids"],
            student_vocab,
            row["completion"] or "",
        )
        counts.add(row_counts)
        row.update(targets.row_fields())
    log_alignment(counts)


def _teacher_tokens(row: dict[str, Any]) -> TeacherTokens:
    """A text row's teacher tokens as bytes: the server's ``bytes`` where it sent them, else
    the token string's UTF-8."""
    tokens = row["tokens"] or []
    pieces = _as_bytes(tokens, row["token_bytes"])
    topk = []
    for i, strings in enumerate(row["topk_tokens"] or []):
        raw = (row["topk_bytes"] or [None] * len(tokens))[i]
        topk.append(list(zip(_as_bytes(strings, raw), row["topk_logprobs"][i], strict=True)))
    return TeacherTokens(pieces, list(row["token_logprobs"] or []), topk)


def _as_bytes(strings: list[str], raw: list[bytes | None] | None) -> list[bytes]:
    raw = raw or [None] * len(strings)
    return [r if r is not None else s.encode("utf-8") for s, r in zip(strings, raw, strict=True)]


def log_alignment(counts: AlignmentCounts) -> None:
    """One line on how the student's tokens train, and warnings on what trains less."""
    total = counts.matched + counts.uld + counts.unaligned
    if not total:
        return
    log.info(
        "cross-tokenizer: of %d student completion tokens, %.1f%% match a teacher token one to "
        "one (distilled token by token), %.1f%% are in groups the tokenizers split differently "
        "(ULD), %.1f%% have no teacher data (end of turn, past the text both spell alike)",
        total,
        100 * counts.matched / total,
        100 * counts.uld / total,
        100 * counts.unaligned / total,
    )
    if counts.rows_unspelled:
        log.warning(
            "cross-tokenizer: %d rows' student tokens do not spell their text (a normalizer "
            "or a special token in it): they train with cross-entropy only",
            counts.rows_unspelled,
        )
    if counts.split_example:
        text, teacher_n, student_n = counts.split_example
        log.warning(
            "cross-tokenizer: teacher and student split numbers differently (%r is %d teacher "
            "and %d student tokens): such spans train through ULD only, with no token-level match",
            text,
            teacher_n,
            student_n,
        )


def _turns(row: dict[str, Any], data: Path) -> list[dict[str, Any]]:
    try:
        turns = json.loads(row["messages"] or "")
    except json.JSONDecodeError:
        turns = None
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise StoreError(
            f"{data}: row {row['id']!r}: messages is not a JSON list of chat turns; capture "
            "this row again (or remove it from the store)"
        )
    return turns
