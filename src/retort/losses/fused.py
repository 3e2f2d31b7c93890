"""Divergence straight from final hidden states, never holding all (tokens × vocabulary) logits.

At 152k vocabulary a float32 logit row is ~600 KB, so 4,096 tokens of teacher and student
logits (plus their softmaxes and gradients) need tens of GB. ``fused_divergence`` walks the
tokens in chunks: for each chunk it forms both models' logits, the per-token divergence and its
gradient with respect to the student's logits, folds that gradient into the gradients of the
student's hidden states and head weight, and drops the chunk. The gradients are therefore
computed in the forward pass (the loss is a scalar, so backward only scales them), which costs
the same matrix products as the materialized path and holds one chunk of logits at a time.
"""

from __future__ import annotations

from typing import Any

import torch

from retort.losses.divergence import at_least_f32, divergence_from_logprobs, log_softmax_at


def fused_divergence(
    student_hidden: torch.Tensor,
    student_head_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_head_weight: torch.Tensor,
    kind: str = "forward_kl",
    *,
    temperature: float = 1.0,
    beta: float = 0.5,
    alpha: float = 0.1,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    chunk_size: int = 256,
) -> torch.Tensor:
    """``divergence(student_hidden @ Ws.T, teacher_hidden @ Wt.T, ...)``, chunked over tokens.

    Args:
        student_hidden: ``(..., H_s)`` final hidden states (after the final norm).
        student_head_weight: ``(V, H_s)`` output-layer weight.
        teacher_hidden: ``(..., H_t)``; no gradient flows to the teacher.
        teacher_head_weight: ``(V, H_t)``; the same V as the student's (slice padded rows off).
        reduction: ``mean`` (over unmasked tokens) or ``sum``; the per-token values of ``none``
            would need a per-token gradient, which defeats the precomputed backward.
        chunk_size: tokens per chunk; peak extra memory is ~4 × chunk_size × V floats.
        Other arguments as in ``divergence``.

    Returns:
        A scalar with gradients for ``student_hidden`` and ``student_head_weight``; only those
        that require grad are computed (a frozen head, as under LoRA, costs no head gradient).
    """
    if reduction not in {"mean", "sum"}:
        raise ValueError(f"fused_divergence reduces with mean or sum, not {reduction!r}")
    if student_head_weight.shape[0] != teacher_head_weight.shape[0]:
        raise ValueError(
            f"head weights have {student_head_weight.shape[0]} and "
            f"{teacher_head_weight.shape[0]} rows; slice both to the shared vocabulary"
        )
    lead = student_hidden.shape[:-1]
    if mask is None:
        mask = torch.ones(lead, dtype=torch.bool, device=student_hidden.device)
    options = {"kind": kind, "temperature": temperature, "beta": beta, "alpha": alpha}
    return _FusedDivergence.apply(
        student_hidden.reshape(-1, student_hidden.shape[-1]),
        student_head_weight,
        teacher_hidden.reshape(-1, teacher_hidden.shape[-1]).detach(),
        teacher_head_weight.detach(),
        mask.reshape(-1),
        options,
        reduction,
        chunk_size,
    )


class _FusedDivergence(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,  # (N, H_s)
        weight: torch.Tensor,  # (V, H_s)
        teacher_hidden: torch.Tensor,  # (N, H_t)
        teacher_weight: torch.Tensor,  # (V, H_t)
        mask: torch.Tensor,  # (N,)
        options: dict[str, Any],
        reduction: str,
        chunk_size: int,
    ) -> torch.Tensor:
        # Only unmasked tokens cost anything: masked ones contribute 0 and get 0 gradient.
        rows = mask.nonzero().squeeze(-1)
        scale = 1.0 / max(int(rows.numel()), 1) if reduction == "mean" else 1.0
        # Build only the gradients autograd will ask for: a frozen head (LoRA) would otherwise
        # cost a (V, H_s) buffer and one more (V × c × H_s) matmul per chunk, read by nobody.
        want_hidden, want_weight = ctx.needs_input_grad[:2]
        any_grad = want_hidden or want_weight  # none when evaluating: the value alone
        total = torch.zeros((), dtype=torch.float64, device=hidden.device)
        grad_hidden = (
            torch.zeros_like(hidden, dtype=at_least_f32(hidden).dtype) if want_hidden else None
        )
        grad_weight = (
            torch.zeros_like(weight, dtype=at_least_f32(weight).dtype) if want_weight else None
        )
        temperature = options["temperature"]
        for start in range(0, int(rows.numel()), chunk_size):
            index = rows[start : start + chunk_size]
            h = hidden[index]  # (c, H_s)
            with torch.enable_grad():
                logits = (h @ weight.T).detach().requires_grad_(any_grad)  # (c, V)
                log_s = log_softmax_at(logits, temperature)
                with torch.no_grad():
                    teacher_logits = teacher_hidden[index] @ teacher_weight.T  # (c, V)
                    log_t = log_softmax_at(teacher_logits, temperature)
                    del teacher_logits
                value = divergence_from_logprobs(
                    log_s, log_t, options["kind"], beta=options["beta"], alpha=options["alpha"]
                ).sum()
            total += value.detach().double()
            if any_grad:
                (grad_logits,) = torch.autograd.grad(value, logits)  # (c, V)
                grad_logits = grad_logits.to(at_least_f32(hidden).dtype)
                if grad_hidden is not None:
                    grad_hidden[index] = grad_logits @ at_least_f32(weight)  # (c, H_s)
                if grad_weight is not None:
                    grad_weight += grad_logits.T @ at_least_f32(h)  # (V, H_s)
                del grad_logits
            del logits, log_s, log_t, value
        # Kept as attributes, not saved tensors: backward scales them in place (no second copy
        # of a vocabulary-sized gradient).
        ctx.grads = tuple(g if g is None else g.mul_(scale) for g in (grad_hidden, grad_weight))
        ctx.input_dtypes = (hidden.dtype, weight.dtype)
        return (total * scale).to(at_least_f32(hidden).dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        grads = ctx.grads
        ctx.grads = None  # backward runs once; free the buffers with the graph
        scaled = tuple(
            None if grad is None else grad.mul_(grad_output).to(dtype)
            for grad, dtype in zip(grads, ctx.input_dtypes, strict=True)
        )
        return (*scaled, None, None, None, None, None, None)
