"""The micro-batches of each optimizer step, a function of (seed, step, process)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from retort.config import DistillConfig
from retort.teachers.local import eos_ids
from retort.train.data import Example, collate, examples_from_rows, micro_batch_indices
from retort.train.on_policy import on_policy_examples, seed_of_samples, student_samples
from retort.train.text_store import log_alignment


@dataclass
class MicroBatch:
    """Tensors from ``collate``, whether the student wrote the completions, and, when an HTTP
    teacher scored them, its summed logprob of them (a local teacher's comes from its forward)."""

    tensors: dict[str, torch.Tensor]
    sampled: bool = False
    teacher_logprob: float | None = None
    sequence_tokens: int = 0  # tokens of its examples (the rest of its positions are padding)
    examples: int = 0  # packed, rows can hold several


if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from retort.train.setup import RunParts


class StepBatches:
    """The micro-batches of each optimizer step, a function of (seed, step, process): slices of
    the store's examples, or for on_policy (with probability lmbda) the same prompts completed
    by the student."""

    def __init__(
        self,
        config: DistillConfig,
        examples: list[Example],
        parts: RunParts,
        rank: int,
        world: int,
    ) -> None:
        self.config = config
        self.examples = examples
        self.pad_id = parts.tokenizer.pad_token_id
        self.scorer = parts.scorer
        self.top_k = 0
        if parts.scorer is not None:
            self.top_k = parts.scorer.top_k
        elif config.objective in ("topk", "cross_tokenizer"):
            self.top_k = parts.top_k
        self.uld = config.objective == "cross_tokenizer"
        self.live = parts.live
        if self.live is not None:
            self.top_k = self.live.top_k
        self.eos_ids = eos_ids(parts.student, parts.tokenizer)
        self.rank, self.world = rank, world
        self.vocab_size = parts.vocab_size
        self.pack = parts.pack

    def of_step(self, step: int, student: PreTrainedModel) -> list[MicroBatch]:
        config = self.config
        micro_batches = []
        for micro in range(config.grad_accum):
            indices = micro_batch_indices(
                len(self.examples),
                step,
                micro,
                config.batch_size,
                config.grad_accum,
                config.seed,
                self.rank,
                self.world,
            )
            chosen = [self.examples[i] for i in indices]
            sampled = config.objective == "on_policy" and student_samples(
                config.seed, step, micro, config.lmbda
            )
            if sampled:
                chosen = on_policy_examples(
                    chosen,
                    student,
                    self.pad_id,
                    self.eos_ids,
                    config.sample_max_new_tokens,
                    config.sample_temperature,
                    seed_of_samples(config.seed, step, micro, self.rank),
                    config.max_seq_len,
                    vocab_size=self.vocab_size,
                )
            if self.live is not None:
                chosen = self._score_live(chosen)
            teacher_logprob = None
            if sampled and self.scorer is not None:
                teacher_logprob = self._score_remotely(chosen)
            tensors = collate(
                chosen,
                self.pad_id,
                self.top_k,
                uld=self.uld,
                pack=self.pack,
                pack_width=config.pack_width,
            )
            real = sum(len(e.input_ids) for e in chosen)
            micro_batches.append(
                MicroBatch(tensors, sampled, teacher_logprob, real, examples=len(chosen))
            )
        return micro_batches

    def _score_live(self, examples: list[Example]) -> list[Example]:
        """The examples again, with the live teacher's targets (cut as the store's are); the
        first batch logs how the student's tokens align."""
        first = self.live.rows_scored == 0
        rows = self.live.scored([e.row for e in examples])
        scored = examples_from_rows(rows, self.config.max_seq_len, keep_rows=True)
        if first:
            log_alignment(self.live.counts)
        return scored

    def _score_remotely(self, examples: list[Example]) -> float:
        """Fill the samples' top-k from the HTTP teacher; returns its summed logprob of them."""
        scored = self.scorer.score(
            [e.input_ids for e in examples], [e.prompt_length for e in examples]
        )
        total = 0.0
        for example, generation in zip(examples, scored, strict=True):
            example.topk_ids = generation.topk_ids
            example.topk_logprobs = generation.topk_logprobs
            total += sum(generation.token_logprobs)
        return total
