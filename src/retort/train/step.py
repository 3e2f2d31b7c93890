"""One optimizer step's forward and backward passes over its micro-batches.

The loss of a step is a mean over every target token of every micro-batch on every process:
each micro-batch's summed loss is divided by the step's global token count before backward, and
DDP's gradient averaging over processes is undone by scaling with the process count, so any
split of the same global batch gives the same update.
"""

from __future__ import annotations

from typing import Any

import torch

from retort.config import DistillConfig
from retort.train import sharding
from retort.train.batches import MicroBatch
from retort.train.data import IGNORE
from retort.train.objectives import ForwardPlan, compute_terms, run_model, teacher_logprob_sum

TERMS = ("ce", "kd", "hidden", "captured_mass", "uld")
# Sums kept per step (and added over processes) to log per-token or per-sample means.
SUMS = (
    "loss",
    *TERMS,
    "teacher_logprob",
    "sample_tokens",
    "samples",
    "positions",  # every position computed (rows × width)
    "sequence_tokens",  # the positions holding an example's token, not padding
)


class StepRunner:
    """Runs the student (and the teacher, under no_grad, where the plan needs it) on each
    micro-batch, backpropagates its share of the step's loss and keeps the sums to log."""

    def __init__(
        self,
        config: DistillConfig,
        parts: Any,
        plan: ForwardPlan,
        accelerator: Any,
        model: Any,
        teacher_model: Any,
        teacher_device: torch.device,
        heads: tuple[torch.Tensor, torch.Tensor] | None,
        projector: Any,
    ) -> None:
        self.config, self.parts, self.plan = config, parts, plan
        self.accelerator, self.model = accelerator, model
        self.teacher_model, self.teacher_device = teacher_model, teacher_device
        self.heads, self.projector = heads, projector

    def __call__(
        self, micro_batches: list[MicroBatch], kd_scale: float
    ) -> tuple[dict[str, float], set[str], torch.Tensor]:
        """Returns the step's sums, the names of the terms computed, and its global count of
        target tokens."""
        accelerator = self.accelerator
        local_tokens = sum(
            int((mb.tensors["labels"][:, 1:] != IGNORE).sum()) for mb in micro_batches
        )
        global_tokens = accelerator.reduce(
            torch.tensor(local_tokens, device=accelerator.device), "sum"
        ).clamp_min(1)
        sums = dict.fromkeys(SUMS, 0.0)
        present: set[str] = set()
        for micro_batch in micro_batches:
            batch = {k: v.to(accelerator.device) for k, v in micro_batch.tensors.items()}
            student_out, teacher_out = self._forward(batch)
            heads = self._heads()
            terms = compute_terms(
                self.config,
                batch,
                student_out,
                teacher_out,
                heads,
                self.parts.vocab_size,
                self.projector,
                self.parts.layer_map,
                kd_scale,
            )
            accelerator.backward(terms.loss / global_tokens * accelerator.num_processes)
            sums["loss"] += float(terms.loss.detach())
            sums["positions"] += micro_batch.tensors["input_ids"].numel()
            sums["sequence_tokens"] += micro_batch.sequence_tokens
            for name in TERMS:
                value = getattr(terms, name)
                if value is not None:
                    sums[name] += float(value)
                    present.add(name)
            if micro_batch.sampled:
                self._add_sample_sums(sums, batch, teacher_out, heads, micro_batch)
            sharding.release(self.teacher_model)
        return sums, present, global_tokens

    def _heads(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The output layers for the fused path. A sharded model's is whole only from its
        forward on (FSDP2 keeps the root unit gathered for backward; the teacher until
        ``release``), so it is read after each forward; gradients reach the student's
        shards through FSDP's own reduce-scatter."""
        if self.heads is not None or self.plan.student_logits:
            return self.heads
        student = self.accelerator.unwrap_model(self.model).get_output_embeddings().weight
        teacher = self.teacher_model.get_output_embeddings().weight
        return student, teacher.to(self.accelerator.device)

    def _forward(self, batch: dict[str, torch.Tensor]) -> tuple[Any, Any]:
        plan = self.plan
        student_out = run_model(self.model, batch, plan.student_logits, plan.student_hidden)
        if self.teacher_model is None:
            return student_out, None
        with torch.no_grad():
            on_teacher = {k: v.to(self.teacher_device) for k, v in batch.items()}
            teacher_out = run_model(
                self.teacher_model, on_teacher, plan.teacher_logits, plan.teacher_hidden
            )
        return student_out, teacher_out.to(self.accelerator.device)

    def _add_sample_sums(
        self,
        sums: dict[str, float],
        batch: dict[str, torch.Tensor],
        teacher_out: Any,
        heads: tuple[torch.Tensor, torch.Tensor] | None,
        micro_batch: MicroBatch,
    ) -> None:
        """The student's sample lengths and the teacher's logprob of what it wrote."""
        scored = micro_batch.teacher_logprob
        if scored is None:  # a local teacher: its forward pass has the logprobs
            head = heads[1] if heads else None
            scored = float(
                teacher_logprob_sum(
                    teacher_out, batch, head, self.parts.vocab_size, self.config.chunk_size
                )
            )
        sums["teacher_logprob"] += scored
        sums["sample_tokens"] += float((batch["labels"][:, 1:] != IGNORE).sum())
        sums["samples"] += micro_batch.examples
