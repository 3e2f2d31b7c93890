"""Divergence against a teacher known only by its top-k logprobs.

The teacher's k stored logprobs plus one tail bucket (1 − Σ of their probabilities) form a
(k+1)-outcome distribution; the student's is its probabilities on the same k ids plus its own
remaining mass. With temperature T ≠ 1 both sides' k+1 outcomes are raised to 1/T and
renormalized (the tail treated as one outcome: an approximation, exact at T = 1).
"""

from __future__ import annotations

import torch

from retort.losses.divergence import at_least_f32, divergence_from_logprobs, reduce_tokens


def sparse_divergence(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    kind: str = "forward_kl",
    *,
    temperature: float = 1.0,
    beta: float = 0.5,
    alpha: float = 0.1,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Divergence over the teacher's top-k ids plus a tail bucket.

    Args:
        student_logits: ``(..., V)``.
        topk_ids: ``(..., k)`` int64 token ids, distinct within a position.
        topk_logprobs: ``(..., k)`` the teacher's log-probabilities (temperature 1) of those ids.
        Other arguments as in ``divergence``.
    """
    log_s_full = torch.log_softmax(at_least_f32(student_logits), dim=-1)  # (..., V)
    log_s = _with_tail(log_s_full.gather(-1, topk_ids))  # (..., k+1)
    log_t = _with_tail(at_least_f32(topk_logprobs))  # (..., k+1)
    if temperature != 1.0:
        log_s = torch.log_softmax(log_s / temperature, dim=-1)
        log_t = torch.log_softmax(log_t / temperature, dim=-1)
    per_token = divergence_from_logprobs(log_s, log_t, kind, beta=beta, alpha=alpha)
    return reduce_tokens(per_token, mask, reduction)


def captured_mass(topk_logprobs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean teacher probability covered by the stored top-k (1.0 means no tail)."""
    mass = at_least_f32(topk_logprobs).exp().sum(-1).clamp_max(1.0)
    return reduce_tokens(mass, mask, "mean")


def _with_tail(log_k: torch.Tensor) -> torch.Tensor:
    """Append log(1 − Σ exp(log_k)) as a last outcome.

    The tail is floored at the smallest normal float32 rather than 0, so a top-k that holds all
    the mass (k = V) gives a finite log and no NaN gradient; its effect on values is < 1e-37.
    """
    covered = torch.logsumexp(log_k, dim=-1, keepdim=True).clamp_max(0.0)
    tail = (-torch.expm1(covered)).clamp_min(torch.finfo(log_k.dtype).tiny).log()
    return torch.cat([log_k, tail], dim=-1)
