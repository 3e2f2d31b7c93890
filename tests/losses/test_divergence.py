"""The math of the divergences: identities, closed forms, masks, gradients, top-k = dense."""

from __future__ import annotations

import math

import pytest
import torch

from retort.losses import KINDS, captured_mass, divergence, sparse_divergence


def logits(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 2


@pytest.mark.parametrize("kind", KINDS)
def test_divergence_of_a_distribution_with_itself_is_zero(kind):
    x = logits(3, 5, 11)
    assert divergence(x, x.clone(), kind).abs().item() < 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_divergence_is_non_negative(kind):
    per_token = divergence(
        logits(4, 7, 13, seed=1), logits(4, 7, 13, seed=2), kind, reduction="none"
    )
    assert (per_token >= -1e-6).all()


def test_forward_and_reverse_kl_match_the_two_outcome_closed_form():
    p, q = 0.8, 0.3  # teacher, student probability of outcome 0
    teacher = torch.tensor([[math.log(p), math.log(1 - p)]])
    student = torch.tensor([[math.log(q), math.log(1 - q)]])
    forward = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    reverse = q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))
    assert divergence(student, teacher, "forward_kl").item() == pytest.approx(forward, rel=1e-5)
    assert divergence(student, teacher, "reverse_kl").item() == pytest.approx(reverse, rel=1e-5)
    assert divergence(student, teacher, "tvd").item() == pytest.approx(abs(p - q), rel=1e-5)


def test_jsd_is_symmetric_at_half():
    a, b = logits(2, 3, 9, seed=3), logits(2, 3, 9, seed=4)
    assert divergence(a, b, "jsd", beta=0.5).item() == pytest.approx(
        divergence(b, a, "jsd", beta=0.5).item(), rel=1e-5
    )


def test_temperature_flattens_both_sides():
    a, b = logits(2, 9, seed=5), logits(2, 9, seed=6)
    assert divergence(a, b, temperature=2.0).item() == pytest.approx(
        divergence(a / 2, b / 2).item(), rel=1e-5
    )


def test_minus_infinity_logits_give_a_finite_loss_and_gradient():
    # A token banned for both (e.g. padded vocabulary rows masked to -inf); a token only the
    # teacher bans makes reverse KL truly infinite, which is the right answer there.
    student_logits = logits(2, 6, seed=7)
    student_logits[:, 0] = float("-inf")
    student = student_logits.requires_grad_()
    teacher = logits(2, 6, seed=8)
    teacher[:, 0] = float("-inf")
    for kind in KINDS:
        value = divergence(student, teacher, kind)
        (grad,) = torch.autograd.grad(value, student)
        assert torch.isfinite(value) and torch.isfinite(grad).all(), kind


def test_all_masked_batch_gives_zero_and_zero_gradient():
    student = logits(2, 4, 10, seed=9).requires_grad_()
    mask = torch.zeros(2, 4, dtype=torch.bool)
    value = divergence(student, logits(2, 4, 10, seed=10), mask=mask)
    value.backward()
    assert value.item() == 0.0
    assert student.grad.abs().sum().item() == 0.0


def test_mean_reduction_averages_over_unmasked_tokens_only():
    student, teacher = logits(1, 4, 10, seed=11), logits(1, 4, 10, seed=12)
    mask = torch.tensor([[True, False, True, False]])
    per_token = divergence(student, teacher, reduction="none")
    expected = (per_token[0, 0] + per_token[0, 2]) / 2
    assert divergence(student, teacher, mask=mask).item() == pytest.approx(expected.item())


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_finite_differences_in_float64(kind):
    student = logits(2, 5, seed=13).double().requires_grad_()
    teacher = logits(2, 5, seed=14).double()
    assert torch.autograd.gradcheck(lambda s: divergence(s, teacher, kind), (student,))


@pytest.mark.parametrize("kind", KINDS)
def test_sparse_divergence_with_the_whole_vocabulary_equals_dense(kind):
    student, teacher = logits(2, 3, 17, seed=15), logits(2, 3, 17, seed=16)
    topk = torch.log_softmax(teacher, -1).topk(17)
    sparse = sparse_divergence(student, topk.indices, topk.values, kind)
    assert sparse.item() == pytest.approx(divergence(student, teacher, kind).item(), rel=1e-5)


def test_sparse_divergence_puts_uncaptured_mass_in_one_tail_bucket():
    # Teacher over 4 tokens, top-2 known; the other two form one outcome on each side.
    teacher = torch.log(torch.tensor([0.5, 0.3, 0.1, 0.1]))
    student = torch.log(torch.tensor([0.25, 0.25, 0.25, 0.25]))
    ids, values = torch.tensor([0, 1]), teacher[:2]
    expected = 0.5 * math.log(0.5 / 0.25) + 0.3 * math.log(0.3 / 0.25) + 0.2 * math.log(0.2 / 0.5)
    value = sparse_divergence(student[None], ids[None], values[None])
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert captured_mass(values[None]).item() == pytest.approx(0.8, rel=1e-6)


def test_sparse_divergence_gradient_is_finite_when_top_k_holds_all_mass():
    student = logits(3, 6, seed=17).requires_grad_()
    topk = torch.log_softmax(logits(3, 6, seed=18), -1).topk(6)
    sparse_divergence(student, topk.indices, topk.values).backward()
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("edge", [1e-7, 1 - 1e-7])
def test_jsd_goes_to_zero_at_both_ends_of_beta(edge):
    a, b = logits(3, 9, seed=20), logits(3, 9, seed=21)
    assert divergence(a, b, "jsd", beta=edge).item() < 1e-5
    assert divergence(a, b, "jsd", beta=0.5).item() > 1e-2


def test_jsd_and_skew_kl_match_two_outcome_closed_forms():
    p, q, beta, alpha = 0.8, 0.3, 0.3, 0.2  # teacher and student mass on outcome 0

    def kl(x, y):
        return x * math.log(x / y) + (1 - x) * math.log((1 - x) / (1 - y))

    teacher = torch.tensor([[math.log(p), math.log(1 - p)]])
    student = torch.tensor([[math.log(q), math.log(1 - q)]])
    m = beta * p + (1 - beta) * q
    jsd = beta * kl(p, m) + (1 - beta) * kl(q, m)
    skew_forward = kl(p, alpha * p + (1 - alpha) * q)
    skew_reverse = kl(q, alpha * q + (1 - alpha) * p)
    assert divergence(student, teacher, "jsd", beta=beta).item() == pytest.approx(jsd, rel=1e-5)
    assert divergence(student, teacher, "skew_forward_kl", alpha=alpha).item() == pytest.approx(
        skew_forward, rel=1e-5
    )
    assert divergence(student, teacher, "skew_reverse_kl", alpha=alpha).item() == pytest.approx(
        skew_reverse, rel=1e-5
    )


@pytest.mark.parametrize("kind", KINDS)
def test_sparse_divergence_gradients_match_finite_differences(kind):
    student = logits(2, 7, seed=22).double().requires_grad_()
    topk = torch.log_softmax(logits(2, 7, seed=23).double(), -1).topk(3)
    assert torch.autograd.gradcheck(
        lambda s: sparse_divergence(s, topk.indices, topk.values, kind), (student,)
    )


def test_accumulating_four_micro_batches_equals_one_batch_of_four():
    student = logits(4, 6, 11, seed=24).double().requires_grad_()
    teacher = logits(4, 6, 11, seed=25).double()
    mask = torch.rand(4, 6, generator=torch.Generator().manual_seed(0)) > 0.3
    divergence(student, teacher, "reverse_kl", mask=mask).backward()
    whole = student.grad.clone()
    student.grad = None
    count = mask.sum()  # the global count of the step, known before any micro-batch runs
    for i in range(4):
        part = divergence(student[i], teacher[i], "reverse_kl", mask=mask[i], reduction="sum")
        (part / count).backward()
    torch.testing.assert_close(student.grad, whole, rtol=1e-6, atol=1e-12)
