"""What a distillation step minimizes: the terms, each a sum over target tokens.

    loss = ce_weight · CE + kd_weight · T² · s · KD + hidden_weight · H

- CE: cross-entropy on the teacher's completion tokens (sequence-level KD; all of ``sft``).
- KD: the chosen divergence (``kind``) against the stored top-k (``topk``; ``cross_tokenizer``
  where one teacher token matches one student token, plus ``uld_weight`` · ULD over the groups
  the two tokenizers split differently, see crosstok/targets.py) or the live teacher's
  full distribution (``online``, computed from hidden states in chunks when ``fused``), on the
  stored completions or on the student's own samples (``on_policy``, see on_policy.py).
- H: feature loss between matched hidden states (``hidden_weight`` > 0).
- s: 1, or with ``kd_rescale`` the running ratio of CE to KD magnitudes, so neither term drowns
  the other.

Every term is a *sum* over the micro-batch's target tokens; the loop divides by the global
target-token count of the optimizer step, so gradient accumulation and multiple processes give
the same update as one large batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from retort.config import DistillConfig, is_http_teacher
from retort.losses import (
    HiddenProjector,
    captured_mass,
    chunked_cross_entropy,
    divergence,
    fused_divergence,
    hidden_state_loss,
    sparse_divergence,
    uld_groups_loss,
)
from retort.train.data import IGNORE

# Objectives whose KD term is against the live teacher's full distribution.
LIVE_TEACHER = ("online", "on_policy")


def uses_topk(config: DistillConfig) -> bool:
    """KD against top-k logprobs in the batch: stored ones, or an HTTP teacher's scores."""
    remote_on_policy = config.objective == "on_policy" and is_http_teacher(config.teacher)
    return config.objective in ("topk", "cross_tokenizer") or remote_on_policy


# logits_to_keep=<no positions>: the model returns hidden states and skips its (T × V) head.
NO_LOGITS = torch.empty(0, dtype=torch.long)


@dataclass(frozen=True)
class ForwardPlan:
    """Which outputs each model's forward pass must produce for a config."""

    student_logits: bool
    student_hidden: bool
    teacher_logits: bool
    teacher_hidden: bool

    @property
    def needs_teacher(self) -> bool:
        return self.teacher_logits or self.teacher_hidden

    @classmethod
    def of(cls, config: DistillConfig, fused_ok: bool = True) -> ForwardPlan:
        online = config.objective in LIVE_TEACHER and not is_http_teacher(config.teacher)
        fused = online and config.fused and fused_ok
        hidden = config.hidden_weight > 0
        return cls(
            student_logits=not fused,
            student_hidden=fused or hidden,
            teacher_logits=online and not fused,
            teacher_hidden=fused or hidden,
        )


@dataclass
class Forward:
    """One model's outputs: logits ``(B, L, V)`` and/or ``hidden_states`` (L+1 × (B, L, H))."""

    logits: torch.Tensor | None
    hidden_states: tuple[torch.Tensor, ...] | None

    def to(self, device: torch.device) -> Forward:
        """On ``device`` (a teacher placed elsewhere hands its outputs to the student's)."""
        return Forward(
            self.logits.to(device) if self.logits is not None else None,
            tuple(h.to(device) for h in self.hidden_states) if self.hidden_states else None,
        )


def run_model(model: Any, batch: dict[str, torch.Tensor], logits: bool, hidden: bool) -> Forward:
    """Forward pass producing only what is asked for."""
    out = model(
        input_ids=batch["input_ids"],
        # a packed batch has position_ids instead: transformers keeps its examples apart
        attention_mask=batch.get("attention_mask"),
        position_ids=batch.get("position_ids"),
        use_cache=False,  # training never reads it, and a cache turns off packed attention
        output_hidden_states=hidden,
        logits_to_keep=0 if logits else NO_LOGITS.to(batch["input_ids"].device),
    )
    return Forward(out.logits if logits else None, out.hidden_states if hidden else None)


@dataclass
class Terms:
    """Loss terms of one micro-batch: ``loss`` carries the gradient; the rest are detached sums
    over target tokens (None when not computed)."""

    loss: torch.Tensor
    ce: torch.Tensor | None = None
    kd: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    captured_mass: torch.Tensor | None = None
    uld: torch.Tensor | None = None  # cross_tokenizer: summed ULD distance (part of kd)


@dataclass
class KDRescaler:
    """Running magnitudes of CE and KD per token; ``scale`` = CE / KD (1 until both seen)."""

    decay: float = 0.9
    ce: float | None = None
    kd: float | None = None

    @property
    def scale(self) -> float:
        if not self.ce or not self.kd:
            return 1.0
        return self.ce / self.kd

    def update(self, ce_per_token: float, kd_per_token: float) -> None:
        self.ce = self._blend(self.ce, ce_per_token)
        self.kd = self._blend(self.kd, kd_per_token)

    def _blend(self, old: float | None, new: float) -> float:
        return new if old is None else self.decay * old + (1 - self.decay) * new

    def state_dict(self) -> dict[str, Any]:
        return {"ce": self.ce, "kd": self.kd}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ce, self.kd = state.get("ce"), state.get("kd")


def compute_terms(
    config: DistillConfig,
    batch: dict[str, torch.Tensor],
    student: Forward,
    teacher: Forward | None,
    heads: tuple[torch.Tensor, torch.Tensor] | None,
    vocab_size: int,
    projector: HiddenProjector | None = None,
    layer_map: list[int] | None = None,
    kd_scale: float = 1.0,
) -> Terms:
    """Loss terms for one micro-batch.

    Args:
        batch: from ``retort.train.data.collate``.
        student, teacher: forward outputs (see ``ForwardPlan``).
        heads: (student, teacher) output-layer weights ``(V, H)``, for the fused path.
        vocab_size: logit columns both models share; logits and heads are cut to it.
        projector, layer_map: for the hidden-state term.
        kd_scale: multiplier of the KD term (``KDRescaler.scale``).
    """
    targets = batch["labels"][:, 1:]  # (B, L-1): position t predicts token t+1
    mask = targets != IGNORE
    kd_options = {
        "temperature": config.temperature,
        "beta": config.beta,
        "alpha": config.alpha,
        "mask": mask,
        "reduction": "sum",
    }
    logits = student.logits[:, :-1, :vocab_size] if student.logits is not None else None
    terms = Terms(loss=torch.zeros((), device=targets.device))

    if config.ce_weight > 0 or config.kd_rescale or logits is not None:
        if logits is not None:
            ce = F.cross_entropy(
                logits.float().flatten(0, 1),
                targets.flatten(),
                ignore_index=IGNORE,
                reduction="sum",
            )
        else:
            ce = chunked_cross_entropy(
                student.hidden_states[-1][:, :-1],
                heads[0][:vocab_size],
                targets,
                chunk_size=config.chunk_size,
            )
        terms.ce = ce.detach()
        terms.loss = terms.loss + config.ce_weight * ce

    kd = None
    if uses_topk(config):
        topk_logprobs = batch["topk_logprobs"][:, 1:]
        kd = sparse_divergence(
            logits, batch["topk_ids"][:, 1:], topk_logprobs, config.kind, **kd_options
        )
        terms.captured_mass = captured_mass(topk_logprobs, mask) * mask.sum()
    elif config.objective in LIVE_TEACHER and logits is not None:
        kd = divergence(logits, teacher.logits[:, :-1, :vocab_size], config.kind, **kd_options)
    elif config.objective in LIVE_TEACHER:
        kd = fused_divergence(
            student.hidden_states[-1][:, :-1],
            heads[0][:vocab_size],
            teacher.hidden_states[-1][:, :-1],
            heads[1][:vocab_size],
            config.kind,
            chunk_size=config.chunk_size,
            **kd_options,
        )
    if config.objective == "cross_tokenizer":
        uld, _groups = uld_groups_loss(
            logits,
            targets.clamp(min=0),
            _shifted_heads(batch["uld_head"]),
            batch["uld_logprobs"][:, 1:],
            batch["uld_chain"][:, 1:],
        )
        terms.uld = uld.detach()
    if kd is not None:
        terms.kd = kd.detach()
        kd_loss = config.temperature**2 * kd
        if terms.uld is not None:  # a distance between probabilities at T = 1: no T² factor
            kd_loss = kd_loss + config.uld_weight * uld
        terms.loss = terms.loss + config.kd_weight * kd_scale * kd_loss

    if config.hidden_weight > 0:
        positions = torch.zeros_like(batch["labels"], dtype=torch.bool)
        positions[:, :-1] = mask  # the states whose next token is a target
        hidden = hidden_state_loss(
            student.hidden_states,
            teacher.hidden_states,
            layer_map,
            projector,
            config.hidden_loss,
            mask=positions,
            reduction="sum",
        )
        terms.hidden = hidden.detach()
        terms.loss = terms.loss + config.hidden_weight * hidden
    return terms


def _shifted_heads(heads: torch.Tensor) -> torch.Tensor:
    """``uld_head`` (sequence positions of tokens) in the coordinates of the logits that predict
    them: position t's logits predict token t+1."""
    shifted = heads[:, 1:]
    return torch.where(shifted >= 0, shifted - 1, shifted)


def fused_head_matches(model: Any) -> bool:
    """True when ``lm_head(hidden_states[-1])`` reproduces the model's logits, so the fused
    path computes the same thing (false for heads with soft-capping or logit scaling)."""
    head = model.get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        return False
    device = head.weight.device
    ids = torch.arange(4, device=device)[None] % head.weight.shape[0]
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        rebuilt = out.hidden_states[-1] @ head.weight.T
    return torch.allclose(rebuilt.float(), out.logits.float(), rtol=1e-3, atol=1e-3)


@torch.no_grad()
def teacher_logprob_sum(
    teacher: Forward,
    batch: dict[str, torch.Tensor],
    head: torch.Tensor | None,
    vocab_size: int,
    chunk_size: int,
) -> torch.Tensor:
    """The teacher's summed log-probability of the batch's target tokens (how much it likes
    what was written), from its logits or, fused, from its last hidden state in chunks."""
    targets = batch["labels"][:, 1:]
    if teacher.logits is not None:
        logits = teacher.logits[:, :-1, :vocab_size].float().flatten(0, 1)
        return -F.cross_entropy(logits, targets.flatten(), ignore_index=IGNORE, reduction="sum")
    hidden = teacher.hidden_states[-1][:, :-1]
    return -chunked_cross_entropy(hidden, head[:vocab_size], targets, chunk_size=chunk_size)
