"""Divergence against a teacher known only by its top-k logprobs.

The teacher's k stored logprobs plus one tail bucket (1 − Σ of their probabilities) form a
(k+1)-outcome distribution; the student's is its probabilities on the same k ids plus its own
remaining mass. With temperature T ≠ 1 both sides' k+1 outcomes are raised to 1/T and
renormalized (the tail treated as one outcome: an approximation, exact at T = 1).

Two kinds of stored entry carry no probability. A logprob of ``-inf`` (or vLLM's -9999, its
JSON for ``-inf``) says the teacher gives that id zero probability; reverse KL against a hard
zero is infinite, so the id joins the tail bucket on both sides, exactly as an id outside the
top-k does. A position whose k entries are *all* zero-probability has no teacher data (an end
token a server reported no logprobs for, a row captured without top-k: ``train.data.collate``
fills such positions so): it adds nothing to the loss or its gradient and is not counted by a
``"mean"``.
"""

from __future__ import annotations

import math

import torch

from retort.losses.divergence import at_least_f32, divergence_from_logprobs, reduce_tokens

ZERO_LOGPROB = -9999.0  # at or below: zero probability (vLLM writes -inf as -9999)


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
        topk_logprobs: ``(..., k)`` the teacher's log-probabilities (temperature 1) of those ids;
            ``-inf`` for zero probability, all ``-inf`` where there is no teacher data.
        Other arguments as in ``divergence``.
    """
    log_t_k = at_least_f32(topk_logprobs)  # (..., k)
    zero, known = _zero_and_known(log_t_k)  # (..., k), (...)
    never = zero & known.unsqueeze(-1)  # zero-probability ids: moved into the tail bucket
    minus_inf = torch.full_like(log_t_k, float("-inf"))
    # Positions without teacher data get a finite stand-in (uniform over the k+1 outcomes) so
    # nothing infinite reaches backward there; their value is dropped below.
    stand_in = torch.full_like(log_t_k, -math.log(log_t_k.shape[-1] + 1))
    log_t_k = torch.where(never, minus_inf, torch.where(known.unsqueeze(-1), log_t_k, stand_in))
    log_s_full = torch.log_softmax(at_least_f32(student_logits), dim=-1)  # (..., V)
    log_s_k = torch.where(never, minus_inf, log_s_full.gather(-1, topk_ids))  # (..., k)
    log_s, log_t = _with_tail(log_s_k), _with_tail(log_t_k)  # (..., k+1)
    if temperature != 1.0:
        log_s = torch.log_softmax(log_s / temperature, dim=-1)
        log_t = torch.log_softmax(log_t / temperature, dim=-1)
    per_token = divergence_from_logprobs(log_s, log_t, kind, beta=beta, alpha=alpha)
    per_token = torch.where(known, per_token, torch.zeros_like(per_token))
    return reduce_tokens(per_token, known if mask is None else mask & known, reduction)


def captured_mass(topk_logprobs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean teacher probability covered by the stored top-k (1.0 means no tail), over the
    positions that have teacher data."""
    log_t_k = at_least_f32(topk_logprobs)
    zero, known = _zero_and_known(log_t_k)
    mass = torch.where(zero, torch.zeros_like(log_t_k), log_t_k.exp()).sum(-1).clamp_max(1.0)
    return reduce_tokens(mass, known if mask is None else mask & known, "mean")


def _zero_and_known(log_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which entries have zero probability ``(..., k)``, and which positions have any teacher
    data at all ``(...)``."""
    zero = log_k <= ZERO_LOGPROB
    return zero, ~zero.all(-1)


def _with_tail(log_k: torch.Tensor) -> torch.Tensor:
    """Append log(1 − Σ exp(log_k)) as a last outcome.

    Σ and 1 − Σ are taken in float64: in float32 a tail below ~6e-8 rounds to 0 next to a
    mass near 1 and would read as log ≈ −87 (reverse KL 5× too large on peaked rows). The tail is
    floored at the smallest normal float64 rather than 0, so a top-k that holds all the mass
    (k = V) gives a finite log and no NaN gradient.
    """
    wide = log_k.double()
    covered = torch.logsumexp(wide, dim=-1, keepdim=True).clamp_max(0.0)
    tail = (-torch.expm1(covered)).clamp_min(torch.finfo(torch.float64).tiny).log()
    return torch.cat([log_k, tail.to(log_k.dtype)], dim=-1)
