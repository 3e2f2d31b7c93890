"""ULD over groups two tokenizers split differently, against a loop written from its
definition."""

from __future__ import annotations

import pytest
import torch

from retort.losses import uld_groups_loss


def reference(logits, targets, heads, teacher_logprobs, teacher_chain):
    total, count = 0.0, 0
    batch, width, _ = logits.shape
    k = teacher_logprobs.shape[-1]
    for b in range(batch):
        for t in range(width):
            if heads[b, t] != t:
                continue
            count += 1
            logp = torch.log_softmax(logits[b, t].double(), -1)
            chain_s = sum(
                torch.log_softmax(logits[b, m].double(), -1)[targets[b, m]]
                for m in range(width)
                if heads[b, m] == t and m != t
            )
            s = (logp.sort(descending=True).values[:k] + chain_s).exp()
            t_probs = (teacher_logprobs[b, t].double() + teacher_chain[b, t]).exp()
            rest_s = torch.exp(torch.as_tensor(chain_s, dtype=torch.float64)) - s.sum()
            rest_t = torch.exp(teacher_chain[b, t].double()) - t_probs.sum()
            total += float((s - t_probs).abs().sum() + (rest_s - rest_t).abs())
    return total, count


def test_uld_matches_its_definition_and_has_a_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 11, requires_grad=True)
    targets = torch.randint(0, 11, (2, 7))
    heads = torch.tensor([[-1, 1, 1, 1, -1, 5, 5], [0, -1, 2, 2, -1, -1, -1]])
    teacher = torch.log_softmax(torch.randn(2, 7, 11), -1).sort(-1, descending=True).values[..., :4]
    chain = -torch.rand(2, 7)
    got, count = uld_groups_loss(logits, targets, heads, teacher, chain)
    expected, expected_count = reference(logits.detach(), targets, heads, teacher, chain)
    assert count == expected_count == 4
    assert float(got.detach()) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    got.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_uld_is_zero_where_the_student_is_the_teacher():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 9)
    heads = torch.tensor([[0, -1, -1]])
    teacher = torch.log_softmax(logits, -1).sort(-1, descending=True).values
    got, count = uld_groups_loss(logits, torch.zeros(1, 3, dtype=torch.long), heads, teacher,
                                 torch.zeros(1, 3))  # fmt: skip
    assert count == 1 and float(got) < 1e-6
