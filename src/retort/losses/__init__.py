"""Distillation losses: dense, sparse (teacher top-k + tail), fused (chunked from hidden
states), cross-tokenizer ULD, and feature losses between hidden states. Formulas and guidance:
docs/losses.md."""

from retort.losses.chunked import chunked_cross_entropy
from retort.losses.divergence import KINDS, divergence, divergence_from_logprobs, reduce_tokens
from retort.losses.fused import fused_divergence
from retort.losses.hidden import (
    HIDDEN_LOSSES,
    HiddenProjector,
    default_layer_map,
    hidden_state_loss,
)
from retort.losses.sparse import captured_mass, sparse_divergence
from retort.losses.uld import uld_groups_loss

__all__ = [
    "HIDDEN_LOSSES",
    "KINDS",
    "HiddenProjector",
    "captured_mass",
    "chunked_cross_entropy",
    "default_layer_map",
    "divergence",
    "divergence_from_logprobs",
    "fused_divergence",
    "hidden_state_loss",
    "reduce_tokens",
    "sparse_divergence",
    "uld_groups_loss",
]
