"""Held-out evaluation during training (``--eval-data STORE --eval-every N``).

The student is scored on the held-out store's teacher completions like ``retort eval``'s
teacher-forced columns: NLL always; top-1 agreement and KL(teacher ‖ student) when the run has
a live local teacher of the same vocabulary. It never changes what is optimized: the student
runs in eval mode under no_grad, the random generators are put back afterwards, and the
training batches do not depend on it, so a run with evaluation resumes (and trains) exactly
like one without.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retort.capture.store import Store
from retort.errors import ModelError, StoreError
from retort.evaluate.metrics import teacher_forced
from retort.models.vocab import tokenizer_hash
from retort.progress import Silent
from retort.train import checkpoint
from retort.train.data import Example, examples_from_rows
from retort.train.text_store import rows_in_student_tokens

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from retort.config import DistillConfig
    from retort.train.setup import RunParts

BATCH_SIZE = 8
# The teacher's logits at the held-out completion positions are the same at every evaluation;
# they are kept in memory (float32) when they fit under this, instead of recomputed.
TEACHER_CACHE_BYTES = 1 << 30


class HeldOutEval:
    """Scores a student on the first ``eval_rows`` rows of ``eval_data``."""

    def __init__(
        self,
        examples: list[Example],
        pad_id: int,
        vocab_size: int,
        teacher: PreTrainedModel | None,
    ) -> None:
        self.examples = examples
        self.pad_id = pad_id
        self.vocab_size = vocab_size
        self.teacher = teacher
        targets = sum(len(e.input_ids) - e.prompt_length for e in examples)
        fits = targets * vocab_size * 4 <= TEACHER_CACHE_BYTES
        self.teacher_cache: dict | None = {} if teacher is not None and fits else None

    @classmethod
    def open(cls, config: DistillConfig, parts: RunParts) -> HeldOutEval | None:
        """Check ``config.eval_data`` against the run (before any write); None without it."""
        if config.eval_data is None:
            return None
        path = Path(config.eval_data)
        store = Store.open(path)
        rows = store.read_table().to_pylist()[: config.eval_rows]
        if not rows:
            raise StoreError(f"--eval-data {path}: store has no rows to evaluate on")
        tokenizer = parts.tokenizer
        if store.is_text:
            rows = rows_in_student_tokens(rows, tokenizer, path)
        elif store.fingerprint.get("tokenizer_sha256") != tokenizer_hash(tokenizer):
            raise ModelError(
                f"--eval-data {path}: made with another tokenizer than the student's; give a "
                "held-out store of the same teacher as --data"
            )
        examples = examples_from_rows(rows, config.max_seq_len)
        if not examples:
            raise StoreError(
                f"--eval-data {path}: every prompt is longer than max_seq_len "
                f"{config.max_seq_len}; raise max_seq_len"
            )
        # top-1 and KL need the teacher's logits over the student's vocabulary: a live local
        # teacher that shares it (a text store's student may have a tokenizer of its own).
        teacher = None
        if parts.teacher is not None and not store.is_text:
            teacher = parts.teacher.model
        return cls(examples, tokenizer.pad_token_id, parts.vocab_size, teacher)

    def __call__(self, student: PreTrainedModel, step: int, tokens_seen: int) -> dict[str, Any]:
        """One metrics.jsonl record: ``{"step", "split": "eval", "tokens_seen", "nll", ...}``."""
        started = time.perf_counter()
        generators = checkpoint.rng_state()
        was_training = student.training
        student.eval()
        try:
            scores = teacher_forced(
                {"student": student},
                self.teacher,
                self.examples,
                self.pad_id,
                self.vocab_size,
                BATCH_SIZE,
                Silent(),
                teacher_cache=self.teacher_cache,
            )["student"]
        finally:
            student.train(was_training)
            checkpoint.restore_rng(generators)
        return {
            "step": step,
            "split": "eval",
            "tokens_seen": tokens_seen,
            **scores,
            "rows": len(self.examples),
            "seconds": time.perf_counter() - started,
        }
