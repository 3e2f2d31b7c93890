"""Sparse (top-k + tail) divergence on degenerate teacher rows (issue 9, items 5 and 6)."""

from __future__ import annotations

import math

import pytest
import torch

from retort.losses import captured_mass, sparse_divergence

KINDS = ("forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tvd")


@pytest.mark.parametrize("zero", [float("-inf"), -9999.0])
@pytest.mark.parametrize("kind", KINDS)
def test_zero_probability_teacher_entries_join_the_tail_bucket(zero, kind):
    # The teacher says "never" for id 2 (vLLM writes that as -9999): reverse KL against a hard
    # zero is infinite, so the id is merged into the tail bucket, as every id outside the top-k
    # is. The value equals the one without that id in the top-k at all.
    student = torch.tensor([[2.0, 0.0, 1.0, -1.0]], requires_grad=True)
    teacher = torch.tensor([[-0.2, -1.8, zero]])
    loss = sparse_divergence(student, torch.tensor([[0, 1, 2]]), teacher, kind)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    without = sparse_divergence(student, torch.tensor([[0, 1]]), teacher[:, :2], kind)
    assert loss.item() == pytest.approx(without.item(), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_positions_without_teacher_data_carry_no_kd_target(kind):
    # A position whose stored top-k is all -inf has no teacher distribution (collate's filler):
    # it adds nothing to the loss or its gradient, whatever the student does there, and a
    # "mean" counts only the positions that have teacher data.
    student = torch.randn(3, 10, generator=torch.Generator().manual_seed(0), requires_grad=True)
    ids = torch.tensor([[0, 1, 2]] * 3)
    known = torch.log_softmax(torch.tensor([3.0, 1.0, 0.0, -1.0]), -1)[:3]
    teacher = torch.stack([known, torch.full((3,), float("-inf")), known])
    per_token = sparse_divergence(student, ids, teacher, kind, reduction="none")
    assert per_token[1].item() == 0.0
    mean = sparse_divergence(student, ids, teacher, kind)
    assert mean.item() == pytest.approx(per_token[[0, 2]].mean().item(), rel=1e-6)
    mean.backward()
    assert torch.isfinite(student.grad).all() and (student.grad[1] == 0).all()


def test_captured_mass_counts_only_positions_with_teacher_data():
    teacher = torch.tensor([[math.log(0.5), math.log(0.25)], [float("-inf")] * 2])
    assert captured_mass(teacher).item() == pytest.approx(0.75)


@pytest.mark.parametrize("kind", ["reverse_kl", "jsd"])
def test_a_tiny_tail_survives_float32_logprobs(kind):
    # A peaked teacher: its top-3 miss only ~3e-8 of the mass. In float32, 1 - Σp rounds to 0
    # and the tail read as the float floor (log ≈ -87), inflating reverse KL about fivefold.
    logits = torch.tensor([[[30.0, 12.0, 11.0, 10.0, -5.0, -6.0]]], dtype=torch.float64)
    teacher = logits.log_softmax(-1)
    top = teacher.topk(3)
    student = torch.zeros(1, 1, 6, dtype=torch.float64)  # uniform
    exact = sparse_divergence(student, top.indices, top.values, kind)
    single = sparse_divergence(student.float(), top.indices, top.values.float(), kind)
    assert single.item() == pytest.approx(exact.item(), rel=1e-3)
