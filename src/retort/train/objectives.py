"""What a distillation step minimizes, per objective, as sums over target tokens.

Every term is returned as a *sum* over the micro-batch's target tokens; the loop divides by the
global target-token count of the whole optimizer step, so gradient accumulation and multiple
processes give the same update as one large batch.

- ``sft``: cross-entropy on the teacher's completion tokens (sequence-level KD).
- ``topk_kl``: forward KL against the stored top-k logprobs plus tail bucket.
- ``online_kl``: forward KL against the live teacher's full distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from retort.config import DistillConfig
from retort.losses import captured_mass, divergence, sparse_divergence
from retort.train.data import IGNORE


@dataclass
class Terms:
    """Per-step loss terms, each a sum over target tokens (the loss a tensor with grad)."""

    loss: torch.Tensor
    ce: torch.Tensor
    kd: torch.Tensor | None
    captured_mass: torch.Tensor | None  # sum over tokens of the teacher's top-k mass


def compute_terms(
    config: DistillConfig,
    batch: dict[str, torch.Tensor],
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    vocab_size: int | None = None,
) -> Terms:
    """Loss terms for one micro-batch.

    Args:
        batch: from ``retort.train.data.collate``.
        student_logits: ``(B, L, V_s)``.
        teacher_logits: ``(B, L, V_t)``; required by ``online_kl``.
        vocab_size: columns both models share (see ``models.vocab``); logits are cut to it.
    """
    logits = student_logits[:, :-1]  # (B, L-1, V): position t predicts token t+1
    if vocab_size is not None:
        logits = logits[..., :vocab_size]
    targets = batch["labels"][:, 1:]  # (B, L-1)
    mask = targets != IGNORE
    ce = F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum"
    )
    kd = mass = None
    kd_options = {"temperature": config.temperature, "mask": mask, "reduction": "sum"}
    if config.objective == "topk_kl":
        topk_ids = batch["topk_ids"][:, 1:]
        topk_logprobs = batch["topk_logprobs"][:, 1:]
        kd = sparse_divergence(logits, topk_ids, topk_logprobs, "forward_kl", **kd_options)
        mass = captured_mass(topk_logprobs, mask) * mask.sum()
    elif config.objective == "online_kl":
        if teacher_logits is None:
            raise ValueError("online_kl needs teacher logits")
        teacher = teacher_logits[:, :-1]
        if vocab_size is not None:
            teacher = teacher[..., :vocab_size]
        kd = divergence(logits, teacher, "forward_kl", **kd_options)

    loss = config.ce_weight * ce
    if kd is not None:
        loss = loss + config.kd_weight * config.temperature**2 * kd
    return Terms(
        loss=loss, ce=ce.detach(), kd=None if kd is None else kd.detach(), captured_mass=mass
    )
