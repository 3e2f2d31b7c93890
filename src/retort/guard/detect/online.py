"""The detector online: per-key features kept as requests pass, a score every ``score_every``
requests, and the key's level on the policy's ladder.

On the request path (the gateway's event loop) ``observe`` costs each cheap family's ``add``
and a queue put; every ``score_every`` requests it adds one ``values()`` and one
``Scorer.score``. Prompts are embedded by a background thread in batches, which also
recomputes the embedding families' values, so the request path only reads a cached dict.
Each key's state has its own lock, held for the window's updates only (never while a family
computes), so the request path waits at most for a snapshot of one key's embeddings.

Escalation is monotone: a key's level only rises automatically. It falls when a timed block
runs out (to the step below) or when an operator overrides it; an override made after the
level was reached clears the automatic level, so ``auto`` starts the key again from none.
Levels are kept apart from the windows, so a key dropped from the LRU keeps its level.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retort.guard.detect.embed import Embedder
from retort.guard.detect.features import cheap_families, embedding_families
from retort.guard.detect.features.base import EmbeddingFamily
from retort.guard.detect.ladder import AUTO, NONE, Effect, effect, override_effect, step_for
from retort.guard.detect.model import Scorer, Verdict
from retort.guard.detect.request import Request
from retort.guard.detect.state import KeyState
from retort.guard.keys import Override
from retort.guard.policy import Detector

log = logging.getLogger(__name__)
EMBED_BATCH = 64  # texts per embedder call
MAX_QUEUED = 10_000  # texts waiting for the embedder; past this new ones are dropped (counted)
EXPIRED = ({"words": "the timed block ran out; back to the highest step below it"},)


@dataclass(frozen=True)
class Change:
    """One change of a key's level, as ``detector_events`` keeps it."""

    ts: float
    key: str
    score: float | None
    level: str  # the step's action, or "none"
    reasons: tuple[dict[str, Any], ...]  # {"feature", "value", "words"} or {"words"}


@dataclass
class Level:
    """Where a key stands on the ladder: the step, and the score and reasons that put it
    there (re-read against the ladder when the policy is reloaded)."""

    index: int
    score: float
    reasons: tuple[str, ...]
    since: float
    until: float | None = None  # a timed block's end


@dataclass
class _Tracked:
    """One key's window and what the embedding thread computed for it."""

    state: KeyState
    families: list[EmbeddingFamily]
    lock: threading.Lock = field(default_factory=threading.Lock)
    embedded: dict[str, float] = field(default_factory=dict)  # swapped whole, never mutated
    fresh: int = 0  # embeddings set since ``embedded`` was computed
    verdict: Verdict | None = None


class OnlineDetector:
    """Per-key detector state for the gateway, with the ladder's levels.

    Args:
        config: the policy's ``detector`` section.
        scorer: the fitted weights.
        embedder: for the embedding families; None measures the cheap families only.
        reference: benign embeddings for the window test (``features.window.Reference``).
        sink: told of every level change (the gateway writes it to ``detector_events``); it
            must return at once.
    """

    def __init__(
        self,
        config: Detector,
        scorer: Scorer,
        embedder: Embedder | None = None,
        reference: Any = None,
        sink: Callable[[Change], None] | None = None,
    ) -> None:
        self.config, self.scorer, self.embedder = config, scorer, embedder
        self.reference, self.sink = reference, sink or (lambda change: None)
        self._states: OrderedDict[str, _Tracked] = OrderedDict()
        self._levels: dict[str, Level] = {}
        self.dropped = 0  # texts the embedder never saw (queue full)
        self._queue: queue.SimpleQueue[tuple[_Tracked, int, str] | None] = queue.SimpleQueue()
        # Each counter has one writer (the request path, the embedding thread): no lock needed.
        self._queued, self._done = 0, 0
        self._thread: threading.Thread | None = None
        if embedder is not None:
            self._thread = threading.Thread(target=self._embed, name="guard-detect", daemon=True)
            self._thread.start()

    # --- the request path ---------------------------------------------------------------------

    def observe(self, request: Request) -> Change | None:
        """Take one answered request into its key's window; re-score the key when due. Returns
        the level change it caused (already given to the sink), if any."""
        tracked = self._track(request.key)
        with tracked.lock:
            seq = tracked.state.add(request)
        if self.embedder is not None and request.text and not request.hashed:
            if self._queue.qsize() < MAX_QUEUED:
                self._queued += 1
                self._queue.put((tracked, seq, request.text))
            else:
                self.dropped += 1
        seen, first = tracked.state.seen, self.config.min_requests
        if seen < first or (seen - first) % self.config.score_every:
            return None
        values = tracked.state.values()  # the cheap families (the state holds no others)
        values.update(tracked.embedded)
        tracked.verdict = verdict = self.scorer.score(values)
        return self._escalate(request.key, verdict, request.ts)

    def level(self, key: str, now: float, override: Override | None = None) -> Effect | None:
        """What the key's level does to its next request (None: nothing). An operator's
        override in force wins; a timed block that ran out falls to the step below here."""
        ladder = self.config.ladder
        held = self._levels.get(key)
        if held is not None and override is not None and override.ts >= held.since:
            del self._levels[key]  # the operator looked after the detector acted
            held = None
        if override is not None and override.level != AUTO and override.in_force(now):
            return override_effect(ladder, override.level, override.until, override.by or "-")
        if held is None:
            return None
        if held.until is not None and now >= held.until:
            # Down to the highest step below that is not a block, still watched from there.
            below = [i for i in range(held.index) if ladder[i].action != "block"]
            held.index, held.until = (below[-1] if below else -1), None
            self._emit(Change(now, key, held.score, self._action(held.index), EXPIRED))
            if held.index < 0:
                del self._levels[key]
                return None
        return effect(ladder, held.index, held.score, held.reasons, held.until)

    def verdict(self, key: str) -> Verdict | None:
        """The key's latest score, while its window is kept."""
        tracked = self._states.get(key)
        return tracked.verdict if tracked else None

    # --- life cycle ---------------------------------------------------------------------------

    def restore(self, changes: Iterable[Change]) -> int:
        """Levels from the latest event of each key (a restarted gateway keeps its blocks);
        a level the current ladder has no step for is dropped. Returns how many were kept."""
        ladder = self.config.ladder
        for change in changes:
            score = change.score if change.score is not None else 0.0
            steps = [i for i, s in enumerate(ladder) if s.action == change.level and s.at <= score]
            if not steps:
                continue
            minutes = ladder[steps[-1]].minutes
            until = change.ts + minutes * 60 if minutes is not None else None
            words = tuple(r.get("words", "") for r in change.reasons)
            self._levels[change.key] = Level(steps[-1], score, words, change.ts, until)
        return len(self._levels)

    def reconfigure(self, config: Detector) -> None:
        """A reloaded policy: the new ladder and cadence. Each level is re-read from the score
        that reached it; the embedder, weights and baseline stay until a restart."""
        self.config = config
        for key, held in list(self._levels.items()):
            held.index = min(held.index, step_for(config.ladder, held.score))
            if held.index < 0:
                del self._levels[key]

    def flush(self, timeout: float = 30) -> bool:
        """Wait until every text queued so far is embedded and its key's values recomputed;
        False if that took longer than ``timeout`` seconds."""
        target, deadline = self._queued, time.monotonic() + timeout
        while self._done < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 30) -> None:
        """Stop the embedding thread after the texts already queued."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    # --- inside -------------------------------------------------------------------------------

    def _track(self, key: str) -> _Tracked:
        tracked = self._states.get(key)
        if tracked is not None:
            self._states.move_to_end(key)
            return tracked
        families = embedding_families(self.reference) if self.embedder is not None else []
        tracked = _Tracked(KeyState(key, cheap_families()), families)
        self._states[key] = tracked
        if len(self._states) > self.config.max_keys:
            self._states.popitem(last=False)  # its level, if any, stays in _levels
        return tracked

    def _escalate(self, key: str, verdict: Verdict, now: float) -> Change | None:
        ladder = self.config.ladder
        index = step_for(ladder, verdict.score)
        held = self._levels.get(key)
        if index <= (held.index if held is not None else -1):
            return None
        words = tuple(r.words for r in verdict.reasons)
        minutes = ladder[index].minutes
        until = now + minutes * 60 if minutes is not None else None
        self._levels[key] = Level(index, verdict.score, words, now, until)
        reasons = tuple(
            {"feature": r.feature, "value": r.value, "words": r.words} for r in verdict.reasons
        )
        change = Change(now, key, verdict.score, ladder[index].action, reasons)
        self._emit(change)
        return change

    def _action(self, index: int) -> str:
        return self.config.ladder[index].action if index >= 0 else NONE

    def _emit(self, change: Change) -> None:
        acting = change.level in ("tighten", "strip_logprobs", "block")
        log.log(
            logging.WARNING if acting else logging.INFO,
            "detector: key %s now at %s (score %s)",
            change.key,
            change.level,
            "-" if change.score is None else f"{change.score:.3f}",
        )
        self.sink(change)

    def _embed(self) -> None:
        """The embedding thread: batches of queued texts, then each touched key's embedding
        families, computed on a snapshot taken under the key's lock."""
        while True:
            items = [self._queue.get()]
            while len(items) < EMBED_BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in items
            work = [i for i in items if i is not None]
            try:
                self._embed_batch(work)
            except Exception:
                log.exception("detector: embedding a batch of %d texts failed", len(work))
            self._done += len(work)
            if stop:
                return

    def _embed_batch(self, work: list[tuple[_Tracked, int, str]]) -> None:
        if not work:
            return
        vectors = np.asarray(self.embedder.embed([text for _, _, text in work]), np.float32)
        touched: dict[int, _Tracked] = {}
        for (tracked, seq, _), vector in zip(work, vectors, strict=True):  # vector: (D,)
            if float(vector @ vector) > 0:  # all zeros: the embedder's "no text"
                with tracked.lock:
                    tracked.state.set_embedding(seq, vector)
                tracked.fresh += 1
                touched[id(tracked)] = tracked
        for tracked in touched.values():
            if tracked.embedded and tracked.fresh < self.config.score_every:
                continue  # recomputed at most once per score_every new embeddings
            with tracked.lock:
                matrix = tracked.state.window_embeddings()  # (N, D), a copy
            values: dict[str, float] = {}
            for family in tracked.families:
                values.update(family.values_from(matrix))
            tracked.embedded, tracked.fresh = values, 0
