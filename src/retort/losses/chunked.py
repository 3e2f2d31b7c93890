"""Cross-entropy from hidden states in token chunks, for heads too large to materialize."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from retort.losses.divergence import at_least_f32


def chunked_cross_entropy(
    hidden: torch.Tensor,
    head_weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    ignore_index: int = -100,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Summed cross-entropy of ``hidden @ head_weight.T`` against ``targets``.

    Each chunk's logits are recomputed in the backward pass (activation checkpointing), so at
    most one chunk of (tokens × vocabulary) logits exists at a time.

    Args:
        hidden: ``(..., H)``; head_weight: ``(V, H)``; targets: ``(...)`` with ``ignore_index``.
    """
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_targets = targets.reshape(-1)
    total = flat_hidden.new_zeros((), dtype=at_least_f32(flat_hidden).dtype)
    for start in range(0, flat_hidden.shape[0], chunk_size):
        chunk_targets = flat_targets[start : start + chunk_size]
        if not (chunk_targets != ignore_index).any():
            continue
        total = total + checkpoint(
            _chunk_loss,
            flat_hidden[start : start + chunk_size],
            head_weight,
            chunk_targets,
            ignore_index,
            use_reentrant=False,
        )
    return total


def _chunk_loss(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int
) -> torch.Tensor:
    logits = at_least_f32(hidden @ weight.T)  # (c, V)
    return F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="sum")
