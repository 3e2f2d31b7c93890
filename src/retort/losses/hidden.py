"""Feature losses between student and teacher hidden states.

A student layer is matched to a teacher layer by a layer map (default: evenly spaced, so a
``prune:N`` student's layers meet the very teacher layers they were copied from). When widths
differ, a learnable linear projection maps the student's states into the teacher's width; it is
trained with the student and saved in its checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from retort.losses.divergence import at_least_f32, reduce_tokens

HIDDEN_LOSSES = ("mse", "cosine")


def default_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer (1-based, as in ``hidden_states``) for each student layer 1..N:
    evenly spaced, first and last matched."""
    if student_layers == 1:
        return [teacher_layers]
    return [
        1 + round(i * (teacher_layers - 1) / (student_layers - 1)) for i in range(student_layers)
    ]


class HiddenProjector(nn.Module):
    """One linear map per matched layer from the student's width to the teacher's
    (identity, with no parameters, when the widths are equal)."""

    def __init__(self, student_width: int, teacher_width: int, layers: int) -> None:
        super().__init__()
        self.maps = (
            nn.ModuleList(
                nn.Linear(student_width, teacher_width, bias=False) for _ in range(layers)
            )
            if student_width != teacher_width
            else None
        )

    def forward(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        return hidden if self.maps is None else self.maps[index](hidden)


def hidden_state_loss(
    student_states: tuple[torch.Tensor, ...],
    teacher_states: tuple[torch.Tensor, ...],
    layer_map: list[int],
    projector: HiddenProjector,
    kind: str = "mse",
    *,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Feature loss averaged over matched layers, then reduced over tokens.

    Args:
        student_states: ``hidden_states`` of the student, ``(B, T, H_s)`` each; index 0 is the
            embeddings, index i the output of layer i.
        teacher_states: the same for the teacher, ``(B, T, H_t)`` each.
        layer_map: ``layer_map[i]`` is the teacher layer matched to student layer ``i + 1``.
        kind: ``mse`` (mean squared error over the hidden axis) or ``cosine`` (1 − cosine).
        mask: ``(B, T)`` True where a token counts.
    """
    if kind not in HIDDEN_LOSSES:
        raise ValueError(f"unknown hidden loss {kind!r}; use one of {', '.join(HIDDEN_LOSSES)}")
    per_token = None
    for index, teacher_layer in enumerate(layer_map):
        student = at_least_f32(projector(index, student_states[index + 1]))
        teacher = at_least_f32(teacher_states[teacher_layer].detach())
        if kind == "mse":
            value = (student - teacher).pow(2).mean(-1)  # (B, T)
        else:
            value = 1 - F.cosine_similarity(student, teacher, dim=-1)
        per_token = value if per_token is None else per_token + value
    return reduce_tokens(per_token / len(layer_map), mask, reduction)
