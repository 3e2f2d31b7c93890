"""What every feature family is: named features with words for an analyst, kept per key over a
window of recent requests by ``add``/``evict`` (each O(1) amortized: the gateway calls ``add``
on the request path)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from retort.guard.detect.request import Request


@dataclass(frozen=True)
class Feature:
    """One number a family reports.

    Args:
        name: ``family.feature``, e.g. ``timing.interarrival_cv``; stable (scores and weights
            files refer to it).
        words: how a trust-and-safety analyst reads it, formatted with the value, e.g.
            ``"requests arrive at machine-regular intervals (CV {value:.2f})"``.
        neutral: the value that says nothing either way, used while too few requests have been
            seen (and as the standardization centre before a model is fitted).
        suspicious: +1 for a feature that may only ever count *toward* extraction as it grows
            (the fit bounds its weight at 0 or above; see ``fit``), 0 for one whose weight is
            free.
    """

    name: str
    words: str
    neutral: float = 0.0
    suspicious: int = 0

    def describe(self, value: float) -> str:
        return self.words.format(value=value)


class Family(Protocol):
    """A feature family: cheap per-request aggregates over the key's window."""

    features: tuple[Feature, ...]

    def add(self, request: Request) -> None:
        """A request entered the window."""

    def evict(self, request: Request) -> None:
        """The oldest request left the window (``add`` saw it earlier)."""

    def values(self) -> dict[str, float]:
        """Every feature's value now, by ``Feature.name``."""


class EmbeddingFamily(Protocol):
    """A family that reads the window's prompt embeddings (computed in batches, off the
    request path) rather than the requests one at a time."""

    features: tuple[Feature, ...]

    def values_from(self, embeddings: np.ndarray) -> dict[str, float]:
        """Feature values from the window's embeddings, shape (N, D), rows L2-normalized, in
        arrival order; N may be 0."""


FamilyFactory = Callable[[], Family]
