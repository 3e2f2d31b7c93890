"""Distillation divergences: dense (full vocabulary) and sparse (teacher top-k + tail bucket)."""

from retort.losses.divergence import KINDS, divergence, divergence_from_logprobs, reduce_tokens
from retort.losses.sparse import captured_mass, sparse_divergence

__all__ = [
    "KINDS",
    "captured_mass",
    "divergence",
    "divergence_from_logprobs",
    "reduce_tokens",
    "sparse_divergence",
]
