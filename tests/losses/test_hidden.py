"""Hidden-state losses: zero on identical states, projections when widths differ, layer maps."""

from __future__ import annotations

import pytest
import torch

from retort.losses import HiddenProjector, default_layer_map, hidden_state_loss
from retort.models.pruning import kept_layers


def states(layers: int, width: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 5, width, generator=g) for _ in range(layers + 1))


def test_default_layer_map_meets_the_layers_a_pruned_student_was_copied_from():
    assert default_layer_map(10, 30) == [i + 1 for i in kept_layers(30, 10)]
    assert default_layer_map(1, 4) == [4]


@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_identical_states_give_zero(kind):
    teacher = states(4, 8)
    student = (teacher[0], teacher[1], teacher[4])  # a 2-layer student copied from layers 1, 4
    projector = HiddenProjector(8, 8, 2)
    assert projector.maps is None
    value = hidden_state_loss(student, teacher, [1, 4], projector, kind)
    assert abs(value.item()) < 1e-6


def test_mse_is_the_mean_over_width_and_layers_of_squared_differences():
    teacher, student = states(2, 4, seed=1), states(2, 4, seed=2)
    want = sum(((student[i] - teacher[i]) ** 2).mean(-1) for i in (1, 2)) / 2
    value = hidden_state_loss(student, teacher, [1, 2], HiddenProjector(4, 4, 2), "mse")
    assert value.item() == pytest.approx(want.mean().item(), rel=1e-6)


def test_a_projection_maps_a_narrower_student_and_learns():
    teacher, student = states(4, 12, seed=3), states(2, 6, seed=4)
    projector = HiddenProjector(6, 12, 2)
    optimizer = torch.optim.Adam(projector.parameters(), lr=0.05)
    first = None
    for _ in range(30):
        value = hidden_state_loss(student, teacher, [2, 4], projector, "mse")
        first = first if first is not None else value.item()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    assert value.item() < first * 0.8
    mask = torch.zeros(2, 5, dtype=torch.bool)
    assert hidden_state_loss(student, teacher, [2, 4], projector, mask=mask).item() == 0.0
