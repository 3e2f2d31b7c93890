"""Store rows → training batches when teacher data is missing or misaligned (issue 9, item 6):
a completion position without the teacher's top-k must carry no KD target (never the old
"uniform over ids 0..k-1" filler), and a row whose top-k does not match its completion is
refused with a message that names it."""

from __future__ import annotations

import math

import pytest
import torch

from retort.errors import StoreError
from retort.losses import sparse_divergence
from retort.train.data import IGNORE, collate, examples_from_rows


def row(completion, topk_ids, topk_logprobs, prompt=(1, 2, 3), id_="r"):
    return {
        "id": id_,
        "prompt_token_ids": list(prompt),
        "completion_token_ids": list(completion),
        "topk_ids": topk_ids,
        "topk_logprobs": topk_logprobs,
    }


def kd_per_position(batch, student):
    """Per-position top-k forward KL as the trainer computes it (shifted, masked by labels)."""
    mask = batch["labels"][:, 1:] != IGNORE
    return sparse_divergence(
        student[:, :-1],
        batch["topk_ids"][:, 1:],
        batch["topk_logprobs"][:, 1:],
        mask=mask,
        reduction="none",
    )


def test_completion_tokens_without_teacher_topk_carry_no_kd_target():
    # One row captured with top-k, one without (an SFT-only row in a top-k run): the second
    # row's completion is labelled (CE trains it) but must not be pulled towards "uniform over
    # ids 0..k-1", whatever the student predicts there.
    good = row([5, 6], [[5, 7], [6, 8]], [[-0.1, -2.5], [-0.2, -2.0]], id_="good")
    bare = row([5, 6], [], [], id_="bare")
    batch = collate(examples_from_rows([good, bare], 32), pad_id=0, top_k=2)
    assert (batch["labels"][1, 3:5] == torch.tensor([5, 6])).all()  # CE still sees it
    student = torch.randn(2, 5, 10, generator=torch.Generator().manual_seed(0)) * 4
    per_position = kd_per_position(batch, student)
    assert (per_position[0, 2:4] > 0).all()  # the row with teacher data has a KD term
    assert (per_position[1] == 0).all()


def test_an_end_token_the_server_gave_no_topk_for_carries_no_kd_target():
    # OpenAI-style servers never report the end token's logprobs: the HTTP teacher appends the
    # token and stores an empty top-k there. CE trains the stop; KD is masked at that position.
    stopped = row([5, 6, 2], [[5, 7], [6, 8], []], [[-0.1, -2.5], [-0.2, -2.0], []])
    batch = collate(examples_from_rows([stopped], 32), pad_id=0, top_k=2)
    student = torch.randn(1, 6, 10, generator=torch.Generator().manual_seed(1)) * 4
    per_position = kd_per_position(batch, student)
    assert (per_position[0, 2:4] > 0).all() and per_position[0, 4] == 0
    assert batch["labels"][0, 5] == 2


@pytest.mark.parametrize(
    "topk_ids, topk_logprobs",
    [
        ([[5, 7]], [[-0.1, -2.5]]),  # one position short
        ([[5, 7], [6, 8], [1, 2]], [[-0.1, -2.5], [-0.2, -2.0], [-0.3, -1.0]]),  # one too many
        ([[5, 7], [6, 8]], [[-0.1, -2.5]]),  # ids and logprobs disagree
        ([[5, 7], [6, 8]], [[-0.1, -2.5], [-0.2]]),  # a position's ids and logprobs disagree
    ],
)
def test_a_row_whose_topk_does_not_match_its_completion_is_refused(topk_ids, topk_logprobs):
    bad = row([5, 6], topk_ids, topk_logprobs, id_="row-17")
    with pytest.raises(StoreError, match=r"row-17.*top-k"):
        examples_from_rows([bad], 32)


def test_prompt_and_padding_positions_still_give_finite_gradients():
    # The filler of positions without teacher data must stay harmless in backward (a masked
    # value with an infinite derivative still turns into NaN: 0 · ∞).
    rows = [
        row([5, 6, 7], [[5, 1]] * 3, [[-0.1, -math.log(20)]] * 3),
        row([5], [[5, 1]], [[0.0, -9.0]]),
    ]
    batch = collate(examples_from_rows(rows, 32), pad_id=0, top_k=2)
    student = torch.randn(2, 6, 10, requires_grad=True)
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        loss = sparse_divergence(
            student[:, :-1],
            batch["topk_ids"][:, 1:],
            batch["topk_logprobs"][:, 1:],
            kind,
            mask=batch["labels"][:, 1:] != IGNORE,
        )
        (grad,) = torch.autograd.grad(loss, student)
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), kind
