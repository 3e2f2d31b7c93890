"""A key's detector state: its recent requests (a window), the feature families' aggregates
over them, and the prompt embeddings that arrive later, in batches."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from retort.guard.detect.features.base import EmbeddingFamily, Family
from retort.guard.detect.request import Request

WINDOW = 256  # requests: long enough for the distribution tests, short enough to forget


class KeyState:
    """Per-key (or per-cluster) state, fed one request at a time, oldest first.

    ``add`` is the request path's cost: each family's O(1) update. Embeddings are set later by
    ``set_embedding`` (the scanner or the gateway's embedding thread) and read only when the
    key is scored.
    """

    def __init__(
        self,
        key: str,
        families: Sequence[Family],
        embedding_families: Sequence[EmbeddingFamily] = (),
        window: int = WINDOW,
    ) -> None:
        self.key, self.size = key, window
        self.families, self.embedding_families = list(families), list(embedding_families)
        self.window: deque[tuple[int, Request]] = deque()
        self.embeddings: dict[int, np.ndarray] = {}
        self.seen = 0  # every request ever added; also the next one's sequence number
        self.first_ts: float | None = None
        self.last_ts: float | None = None

    def add(self, request: Request) -> int:
        """Take one request into the window (evicting the oldest when full); its sequence
        number, for ``set_embedding``."""
        if len(self.window) == self.size:
            seq, old = self.window.popleft()
            self.embeddings.pop(seq, None)
            for family in self.families:
                family.evict(old)
        seq = self.seen
        self.window.append((seq, request))
        for family in self.families:
            family.add(request)
        self.seen += 1
        self.first_ts = request.ts if self.first_ts is None else self.first_ts
        self.last_ts = request.ts
        return seq

    def set_embedding(self, seq: int, vector: np.ndarray) -> None:
        """The embedding of request ``seq``; dropped if it already left the window."""
        if self.window and seq >= self.window[0][0]:
            self.embeddings[seq] = vector

    def window_embeddings(self) -> np.ndarray:
        """Shape (N, D): the embedded requests of the window in arrival order (N ≤ window)."""
        rows = [self.embeddings[s] for s, _ in self.window if s in self.embeddings]
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    def values(self) -> dict[str, float]:
        """Every family's features now; embedding families only once embeddings exist."""
        out: dict[str, float] = {}
        for family in self.families:
            out.update(family.values())
        if self.embedding_families:
            embedded = self.window_embeddings()
            for family in self.embedding_families:
                out.update(family.values_from(embedded))
        return out
