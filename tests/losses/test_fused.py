"""Fused (chunked) divergence and chunked CE equal their materialized forms, values and grads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from retort.losses import KINDS, chunked_cross_entropy, divergence, fused_divergence

TOKENS, STUDENT_H, TEACHER_H, VOCAB = 23, 12, 20, 41


def inputs(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    student_hidden = torch.randn(2, TOKENS, STUDENT_H, generator=g, dtype=dtype).requires_grad_()
    student_head = torch.randn(VOCAB, STUDENT_H, generator=g, dtype=dtype).requires_grad_()
    teacher_hidden = torch.randn(2, TOKENS, TEACHER_H, generator=g, dtype=dtype)
    teacher_head = torch.randn(VOCAB, TEACHER_H, generator=g, dtype=dtype)
    mask = torch.rand(2, TOKENS, generator=g) > 0.25
    return student_hidden, student_head, teacher_hidden, teacher_head, mask


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk_size", [1, 5, 23, 46, 1000])  # divides 46 tokens or not
def test_fused_equals_materialized_in_value_and_gradients(kind, chunk_size):
    hs, ws, ht, wt, mask = inputs()
    options = {"temperature": 1.7, "beta": 0.3, "alpha": 0.2, "mask": mask}
    dense = divergence(hs @ ws.T, ht @ wt.T, kind, **options)
    dense_grads = torch.autograd.grad(dense, (hs, ws))
    fused = fused_divergence(hs, ws, ht, wt, kind, chunk_size=chunk_size, **options)
    fused_grads = torch.autograd.grad(fused, (hs, ws))
    torch.testing.assert_close(fused, dense, rtol=1e-5, atol=0)
    for got, want in zip(fused_grads, dense_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-12)


def test_fused_sum_reduction_and_upstream_gradient_scale():
    hs, ws, ht, wt, mask = inputs(seed=1)
    dense = divergence(hs @ ws.T, ht @ wt.T, "jsd", mask=mask, reduction="sum")
    fused = fused_divergence(hs, ws, ht, wt, "jsd", mask=mask, reduction="sum", chunk_size=7)
    torch.testing.assert_close(fused, dense, rtol=1e-5, atol=0)
    (grad,) = torch.autograd.grad(2.5 * fused, hs)
    (want,) = torch.autograd.grad(2.5 * dense, hs)
    torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-12)


def test_fused_in_float32_matches_float32_materialized():
    hs, ws, ht, wt, mask = inputs(dtype=torch.float32, seed=2)
    dense = divergence(hs @ ws.T, ht @ wt.T, "reverse_kl", mask=mask)
    fused = fused_divergence(hs, ws, ht, wt, "reverse_kl", mask=mask, chunk_size=9)
    torch.testing.assert_close(fused, dense, rtol=1e-5, atol=1e-6)
    for got, want in zip(
        torch.autograd.grad(fused, (hs, ws)), torch.autograd.grad(dense, (hs, ws)), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_fused_all_masked_is_zero_with_zero_gradients():
    hs, ws, ht, wt, mask = inputs(seed=3)
    value = fused_divergence(hs, ws, ht, wt, mask=torch.zeros_like(mask))
    grads = torch.autograd.grad(value, (hs, ws))
    assert value.item() == 0.0
    assert all(g.abs().sum().item() == 0.0 for g in grads)


def test_fused_refuses_heads_of_different_vocabularies():
    hs, ws, ht, wt, _ = inputs(seed=4)
    with pytest.raises(ValueError, match="slice both to the shared vocabulary"):
        fused_divergence(hs, ws, ht, wt[:-1])


@pytest.mark.parametrize("chunk_size", [3, 1000])
def test_chunked_cross_entropy_equals_cross_entropy(chunk_size):
    hs, ws, _, _, mask = inputs(seed=5)
    targets = torch.randint(0, VOCAB, (2, TOKENS), generator=torch.Generator().manual_seed(0))
    targets[~mask] = -100
    dense = F.cross_entropy((hs @ ws.T).flatten(0, 1), targets.flatten(), reduction="sum")
    chunked = chunked_cross_entropy(hs, ws, targets, chunk_size=chunk_size)
    torch.testing.assert_close(chunked, dense, rtol=1e-10, atol=0)
    for got, want in zip(
        torch.autograd.grad(chunked, (hs, ws)), torch.autograd.grad(dense, (hs, ws)), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def matmul_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("kind", ["forward_kl", "jsd"])
def test_fused_with_a_frozen_head_builds_no_head_gradient(kind):
    # LoRA freezes the head: the (V × H) head gradient is a buffer and a matmul per chunk that
    # nobody reads. Input gradients stay those of the materialized loss.
    hs, ws, ht, wt, mask = inputs(seed=6)
    frozen = ws.detach()
    dense = divergence(hs @ frozen.T, ht @ wt.T, kind, mask=mask)
    (want,) = torch.autograd.grad(dense, hs)
    fused = fused_divergence(hs, frozen, ht, wt, kind, mask=mask, chunk_size=7)
    (got,) = torch.autograd.grad(fused, hs)
    torch.testing.assert_close(fused, dense, rtol=1e-5, atol=0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-12)

    def step(head):
        hidden = hs.detach().requires_grad_()
        fused_divergence(hidden, head, ht, wt, kind, mask=mask, chunk_size=7).backward()
        return hidden, head

    trainable_flops = matmul_flops(lambda: step(ws.detach().requires_grad_()))
    frozen_flops = matmul_flops(lambda: step(frozen))
    head_gradient = 2 * int(mask.sum()) * VOCAB * STUDENT_H  # grad_logits.T @ hidden
    assert frozen_flops == trainable_flops - head_gradient
    _, head = step(frozen)
    assert head.grad is None


def test_fused_without_any_gradient_computes_the_value_alone():
    hs, ws, ht, wt, mask = inputs(seed=7)
    hs, ws = hs.detach(), ws.detach()
    dense = divergence(hs @ ws.T, ht @ wt.T, "jsd", mask=mask)
    forward_only = 2 * int(mask.sum()) * VOCAB * (STUDENT_H + TEACHER_H)  # both models' logits
    flops = matmul_flops(lambda: fused_divergence(hs, ws, ht, wt, "jsd", mask=mask, chunk_size=7))
    assert flops == forward_only
    torch.testing.assert_close(
        fused_divergence(hs, ws, ht, wt, "jsd", mask=mask, chunk_size=7), dense, rtol=1e-5, atol=0
    )
