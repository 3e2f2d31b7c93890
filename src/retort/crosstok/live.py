"""Cross-tokenizer targets from a live local teacher (``--live-top-k K``), scored as it trains.

For each row of a micro-batch the teacher reads the same conversation and completion text in
its own tokens (its chat template, its tokenizer) and gives, at every completion position, its
exact top-K and the logprob of the token it read. Those are the ``TeacherTokens`` a text store
would hold, so the byte alignment and the loss are the store path's (crosstok/targets.py);
what changes is that K is not fixed at capture (a larger top-K covers more of the teacher's
mass) and that the logprobs are exact, not the store's lower bound below its top-k.

Memory: one row at a time, and only the completion positions' logits (``logits_to_keep``), so
a 262k-vocabulary teacher holds ``completion tokens × 262k`` floats once, never a whole batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from retort.crosstok.targets import AlignmentCounts, TeacherTokens, position_targets
from retort.crosstok.vocab_bytes import VocabBytes, vocab_bytes
from retort.teachers.chat import render_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class LiveTeacherTargets:
    """A local teacher of another tokenizer that scores store rows into cross-tokenizer
    targets on the student's positions."""

    model: PreTrainedModel
    teacher_tokenizer: PreTrainedTokenizerBase
    teacher_table: list[bytes | None]  # the bytes of each teacher token (read once: 262k)
    student_vocab: VocabBytes
    top_k: int
    counts: AlignmentCounts = field(default_factory=AlignmentCounts)
    rows_scored: int = 0

    @classmethod
    def of(
        cls,
        model: PreTrainedModel,
        teacher_tokenizer: PreTrainedTokenizerBase,
        student_tokenizer: PreTrainedTokenizerBase,
        top_k: int,
    ) -> LiveTeacherTargets:
        teacher_table = vocab_bytes(teacher_tokenizer).table
        return cls(model, teacher_tokenizer, teacher_table, vocab_bytes(student_tokenizer), top_k)

    def place(self, device: torch.device) -> None:
        """Inference only, on ``device``: eval mode, no gradients."""
        self.model = self.model.to(device).eval()
        self.model.requires_grad_(False)

    def scored(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``rows`` (in the student's tokens, with ``messages`` and ``completion`` text) with
        the teacher's targets on their completion positions, as a text store's rows get them."""
        out = []
        for row in rows:
            teacher = self.teacher_tokens(row)
            targets, counts = position_targets(
                teacher, row["completion_token_ids"], self.student_vocab, row["completion"] or ""
            )
            self.counts.add(counts)
            out.append({**row, **targets.row_fields()})
        self.rows_scored += len(rows)
        return out

    @torch.no_grad()
    def teacher_tokens(self, row: dict[str, Any]) -> TeacherTokens:
        """The teacher's own tokens of the row's completion, each with its exact logprob and
        the top-k there (special tokens, which spell no bytes, left out of the top-k: they
        join the tail bucket)."""
        tokenizer, table = self.teacher_tokenizer, self.teacher_table
        prompt_ids = render_prompt(tokenizer, json.loads(row["messages"]))
        completion_ids = tokenizer(row["completion"] or "", add_special_tokens=False)["input_ids"]
        if not completion_ids:
            return TeacherTokens([], [], [])
        device = next(self.model.parameters()).device
        ids = torch.tensor([prompt_ids + completion_ids], device=device)
        # the last n+1 positions: n that predict the completion's tokens, and one after
        logits = self.model(input_ids=ids, logits_to_keep=len(completion_ids) + 1).logits
        logprobs = logits[0, :-1].float().log_softmax(-1)
        chosen = logprobs.gather(-1, ids[0, len(prompt_ids) :, None])[:, 0]
        values, indices = logprobs.topk(min(self.top_k, logprobs.shape[-1]), dim=-1)
        topk = [
            [
                (piece, lp)
                for i, lp in zip(ids_at, lps_at, strict=True)
                if (piece := _piece(table, i))
            ]
            for ids_at, lps_at in zip(indices.tolist(), values.tolist(), strict=True)
        ]
        pieces = [_piece(table, i) for i in completion_ids]
        return TeacherTokens(pieces, chosen.tolist(), topk)


def _piece(table: list[bytes | None], token_id: int) -> bytes:
    """The bytes of a teacher token; b"" for a special token or a padding row of the head
    past the tokenizer's vocabulary."""
    piece = table[token_id] if token_id < len(table) else None
    return piece or b""
