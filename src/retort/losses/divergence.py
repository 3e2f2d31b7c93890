"""Divergences between teacher and student next-token distributions, in log space.

With p_T and p_S the teacher's and student's ``softmax(logits / temperature)``:

- ``forward_kl``      KL(p_T ‖ p_S)                      mode-covering
- ``reverse_kl``      KL(p_S ‖ p_T)                      mode-seeking
- ``jsd``             β·KL(p_T ‖ m) + (1−β)·KL(p_S ‖ m),  m = β·p_T + (1−β)·p_S
- ``skew_forward_kl`` KL(p_T ‖ α·p_T + (1−α)·p_S)
- ``skew_reverse_kl`` KL(p_S ‖ α·p_S + (1−α)·p_T)
- ``tvd``             ½·Σ|p_T − p_S|

Values carry no temperature² factor (the trainer applies it). Everything is float32 inside;
``-inf`` logits (banned tokens) are allowed: 0·log 0 counts as 0.
"""

from __future__ import annotations

import math

import torch

KINDS = ("forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tvd")


def divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    kind: str = "forward_kl",
    *,
    temperature: float = 1.0,
    beta: float = 0.5,
    alpha: float = 0.1,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Divergence per token over the vocabulary, then reduced over unmasked tokens.

    Args:
        student_logits: ``(..., V)``.
        teacher_logits: ``(..., V)``, same shape.
        kind: one of ``KINDS``.
        temperature: softmax temperature applied to both.
        beta: JSD mixture weight of the teacher, in (0, 1).
        alpha: skew weight, in [0, 1).
        mask: ``(...)`` bool, True where the token counts (labels != -100).
        reduction: ``mean`` over unmasked tokens, ``sum``, or ``none`` (per token, masked → 0).
    """
    log_s = log_softmax_at(student_logits, temperature)
    log_t = log_softmax_at(teacher_logits, temperature)
    per_token = divergence_from_logprobs(log_s, log_t, kind, beta=beta, alpha=alpha)
    return reduce_tokens(per_token, mask, reduction)


def at_least_f32(x: torch.Tensor) -> torch.Tensor:
    """Half precision is computed in float32; float64 stays float64 (for gradcheck)."""
    return x if x.dtype == torch.float64 else x.float()


def log_softmax_at(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log_softmax(logits / temperature)`` in at least float32; no extra copy at T = 1."""
    logits = at_least_f32(logits)
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1)


def divergence_from_logprobs(
    log_s: torch.Tensor,
    log_t: torch.Tensor,
    kind: str,
    *,
    beta: float = 0.5,
    alpha: float = 0.1,
) -> torch.Tensor:
    """Per-token divergence ``(...)`` from normalized log-distributions ``(..., V)``."""
    if kind == "forward_kl":
        return _kl(log_t, log_s)
    if kind == "reverse_kl":
        return _kl(log_s, log_t)
    if kind == "jsd":
        if not 0.0 < beta < 1.0:
            raise ValueError(f"jsd: beta must be in (0, 1), got {beta}")
        log_m = _log_mix(log_t, log_s, beta)
        return beta * _kl(log_t, log_m) + (1 - beta) * _kl(log_s, log_m)
    if kind == "skew_forward_kl":
        return _kl(log_t, _log_mix(log_t, log_s, alpha))
    if kind == "skew_reverse_kl":
        return _kl(log_s, _log_mix(log_s, log_t, alpha))
    if kind == "tvd":
        return 0.5 * (log_t.exp() - log_s.exp()).abs().sum(-1)
    raise ValueError(f"unknown divergence kind {kind!r}; use one of {', '.join(KINDS)}")


def reduce_tokens(
    per_token: torch.Tensor, mask: torch.Tensor | None, reduction: str
) -> torch.Tensor:
    """Masked reduction over tokens; an all-masked input gives 0 (and zero gradients)."""
    if mask is not None:
        per_token = torch.where(mask, per_token, torch.zeros_like(per_token))
    if reduction == "none":
        return per_token
    total = per_token.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        count = mask.sum() if mask is not None else torch.tensor(per_token.numel())
        return total / count.clamp_min(1)
    raise ValueError(f"unknown reduction {reduction!r}; use mean, sum or none")


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) summed over the last axis; terms with p = 0 are 0 (and carry no NaN grads)."""
    support = torch.isfinite(log_p)
    safe_p = torch.where(support, log_p, torch.zeros_like(log_p))
    safe_q = torch.where(support, log_q, torch.zeros_like(log_q))
    return (log_p.exp() * (safe_p - safe_q)).sum(-1)


def _log_mix(log_a: torch.Tensor, log_b: torch.Tensor, weight: float) -> torch.Tensor:
    """log(weight·a + (1−weight)·b), stable; weight 0 or 1 returns one side exactly.

    Where both sides are -inf the mixture is -inf; those entries are computed on zeros and
    replaced, because logaddexp(-inf, -inf) has a NaN gradient.
    """
    if weight <= 0.0:
        return log_b
    if weight >= 1.0:
        return log_a
    empty = torch.isneginf(log_a) & torch.isneginf(log_b)
    zeros = torch.zeros_like(log_a)
    mixed = torch.logaddexp(
        torch.where(empty, zeros, log_a) + math.log(weight),
        torch.where(empty, zeros, log_b) + math.log1p(-weight),
    )
    return torch.where(empty, torch.full_like(mixed, float("-inf")), mixed)
