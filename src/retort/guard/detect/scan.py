"""``retort guard scan``'s library side: access logs in, one score per key (and per cluster of
keys acting together) out, each with the reasons that raised it.

Each key's requests go, oldest first, through a ``KeyState`` (the same per-key state the
gateway keeps online); the window rolls, so the key is scored at checkpoints (every
``checkpoint_every`` requests and at its last) and its score is the peak over them: a campaign
that hides in a mixed history still shows in the windows where it ran. Clusters of keys
(``clusters``) are fed as one merged stream through a KeyState of their own and scored alike.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from retort.errors import InputError
from retort.guard.detect import clusters
from retort.guard.detect.embed import Embedder
from retort.guard.detect.features import cheap_families, embedding_families
from retort.guard.detect.logs import LogRead, read_logs
from retort.guard.detect.model import Reason, Scorer
from retort.guard.detect.request import Request
from retort.guard.detect.state import WINDOW, KeyState
from retort.progress import Progress, Silent

CHECKPOINT_EVERY = 25  # requests between scores of one key: the resolution of first_flag_at
EMBED_BATCH = 64  # texts per embedder call
REASONS = 3  # reasons kept per verdict
EXAMPLES, EXAMPLE_CHARS = 3, 500  # prompts kept per key for the report


@dataclass(frozen=True)
class Trace:
    """One stream (a key's or a cluster's) scored at its checkpoints.

    Attributes:
        score: the peak score over the checkpoints.
        reasons: the reasons of that peak.
        values: every feature's value at that peak.
        requests: requests in the stream.
        first_flag_at: requests seen at the first flagged checkpoint (None: never flagged).
        first_flag_ts: that checkpoint's time.
        history: (requests seen, ts, score) at every checkpoint.
        checkpoints: every checkpoint's feature values, when the scan was asked to keep them
            (``keep_values``: what refitting the model reads; empty otherwise).
    """

    score: float
    reasons: tuple[Reason, ...]
    values: dict[str, float]
    requests: int
    first_flag_at: int | None
    first_flag_ts: float | None
    history: tuple[tuple[int, float, float], ...]
    checkpoints: tuple[dict[str, float], ...] = ()


@dataclass(frozen=True)
class KeyScore:
    """One key's verdict: the higher of its own peak and its cluster's (``own`` keeps the
    key's own trace, so a report can show both)."""

    key: str
    score: float
    flagged: bool
    reasons: tuple[Reason, ...]
    cluster: str | None
    requests: int
    first_flag_at: int | None
    history: tuple[tuple[int, float, float], ...]
    own: Trace
    raised_by_cluster: bool = False
    examples: tuple[str, ...] = ()  # a few of its prompts, for the analyst to read


@dataclass(frozen=True)
class ClusterScore:
    """A group of keys acting together, scored as one stream."""

    id: str
    keys: tuple[str, ...]
    evidence: str  # "shared 203.0.113.0/24 addresses, the same prompt template"
    flagged: bool
    trace: Trace


@dataclass
class ScanResult:
    """What a scan found: keys sorted by score (highest first, then key), clusters, the log
    reader's problems and counts, and what the scores were measured with."""

    keys: list[KeyScore]
    clusters: list[ClusterScore]
    log: LogRead
    flag_at: float
    weights: str
    embedder: str | None
    reference: str  # "baseline", "self" or "none"
    notes: list[str] = field(default_factory=list)
    # The window test's reference itself (a features.window.Reference), for the gateway's
    # ``detector.baseline``; None without an embedder or with too little traffic.
    window_reference: Any = None

    @property
    def flagged(self) -> list[KeyScore]:
        return [k for k in self.keys if k.flagged]


def scan(
    paths: Iterable[str | Path],
    baseline_paths: Iterable[str | Path] | None = None,
    embedder: Embedder | None = None,
    scorer: Scorer | None = None,
    window: int = WINDOW,
    checkpoint_every: int = CHECKPOINT_EVERY,
    progress: Progress | None = None,
    keep_values: bool = False,
) -> ScanResult:
    """Score every key of the logs at ``paths``.

    Args:
        paths: access logs (JSONL, Parquet or the gateway's SQLite; see ``logs``).
        baseline_paths: logs of known-benign traffic, the window test's reference. Without
            them the scanned traffic itself is the reference (most traffic is benign).
        embedder: turns prompts into vectors for the topical, PRADA and window features;
            None leaves those features out (the scores then rest on the cheap ones).
        scorer: the model; when None, the packaged weights fitted with this embedder.
        window: requests in a key's rolling window.
        checkpoint_every: requests between a key's scores.
        progress: told of the embedding and scoring stages.
        keep_values: keep every checkpoint's feature values in the traces (for refitting).

    Raises:
        InputError: a log cannot be opened or is not the format it claims.
    """
    progress = progress or Silent()
    scorer = scorer or Scorer.load(embedder=getattr(embedder, "name", None))
    log = read_logs(paths)
    by_key: dict[str, list[Request]] = defaultdict(list)
    for request in log.requests:  # already oldest first
        by_key[request.key].append(request)
    notes: list[str] = []
    vectors: dict[str, np.ndarray] = {}
    reference, reference_kind = None, "none"
    if embedder is None:
        notes.append("no embedder: topical, PRADA and window features were not measured")
    else:
        base = read_logs(baseline_paths) if baseline_paths else None
        texts = [r.text for r in log.requests] + ([r.text for r in base.requests] if base else [])
        vectors = embed_texts(embedder, texts, progress)
        name = getattr(embedder, "name", "")
        if base is not None:  # the user asked for this baseline: too small is their error
            reference, reference_kind = _reference(base.requests, vectors, name), "baseline"
            notes.append(f"window test against a baseline of {base.read} benign requests")
            if base.bad or base.unnamed:
                notes.append(f"the baseline had {base.bad} bad lines, skipped")
        else:
            try:
                reference, reference_kind = _reference(log.requests, vectors, name), "self"
                notes.append(
                    "no baseline: the scanned traffic itself was the window test's reference "
                    "(most traffic is benign; pass --baseline to test against known-benign "
                    "traffic)"
                )
            except InputError as exc:
                notes.append(f"no window test: {exc}")

    def stream(name: str, requests: Sequence[Request]) -> tuple[Trace, KeyState]:
        families = embedding_families(reference) if embedder is not None else []
        state = KeyState(name, cheap_families(), families, window)
        trace = score_stream(state, requests, vectors, scorer, checkpoint_every, keep_values)
        return trace, state

    keys = sorted(by_key)
    progress.start("score keys", len(keys), "keys")
    traces, profiles = {}, []
    try:
        for key in keys:
            traces[key], state = stream(key, by_key[key])
            profiles.append(profile(key, by_key[key], state, vectors))
            progress.advance(1)
    finally:
        progress.finish()

    groups = clusters.cluster(profiles)
    scored: list[ClusterScore] = []
    if groups:
        progress.start("score clusters", len(groups), "clusters")
        try:
            for group in groups:  # one stream: the members' requests in time order
                merged = sorted((r for k in group.keys for r in by_key[k]), key=_order)
                trace, _ = stream(group.id, merged)
                flagged = trace.score >= scorer.flag_at
                scored.append(ClusterScore(group.id, group.keys, group.words, flagged, trace))
                progress.advance(1)
        finally:
            progress.finish()
    member_of = {k: c for c in scored for k in c.keys}
    results = [
        replace(
            _verdict(k, traces[k], member_of.get(k), by_key[k], scorer.flag_at),
            examples=examples(by_key[k]),
        )
        for k in keys
    ]
    results.sort(key=lambda s: (-round(s.score, 6), s.key))
    name = embedder.name if embedder is not None else None
    return ScanResult(
        results, scored, log, scorer.flag_at, scorer.source, name, reference_kind, notes, reference
    )


def score_stream(
    state: KeyState,
    requests: Sequence[Request],
    vectors: dict[str, np.ndarray],
    scorer: Scorer,
    checkpoint_every: int = CHECKPOINT_EVERY,
    keep_values: bool = False,
) -> Trace:
    """Feed ``requests`` (oldest first) through ``state``, scoring at every
    ``checkpoint_every``-th request and at the last; the peak (earliest, on a tie) wins."""
    if checkpoint_every < 1:
        raise ValueError("checkpoint_every must be at least 1")
    best, best_values, history, kept = None, {}, [], []
    first_at, first_ts = None, None
    for n, request in enumerate(requests, start=1):
        seq = state.add(request)
        vector = vectors.get(request.text)
        if vector is not None:
            state.set_embedding(seq, vector)
        if n % checkpoint_every and n != len(requests):
            continue
        values = state.values()
        verdict = scorer.score(values, top=REASONS)
        history.append((n, request.ts, verdict.score))
        if keep_values:
            kept.append(values)
        if best is None or verdict.score > best.score:
            best, best_values = verdict, values
        if verdict.flagged and first_at is None:
            first_at, first_ts = n, request.ts
    if best is None:  # no requests: nothing to say
        return Trace(0.0, (), {}, 0, None, None, ())
    return Trace(
        best.score,
        tuple(best.reasons),
        best_values,
        len(requests),
        first_at,
        first_ts,
        tuple(history),
        tuple(kept),
    )


def embed_texts(
    embedder: Embedder, texts: Iterable[str], progress: Progress | None = None
) -> dict[str, np.ndarray]:
    """Each distinct embeddable text's vector, computed in batches of ``EMBED_BATCH`` in
    first-seen order. Empty texts and sha256 digests (a log kept with hashed bodies) are
    left out: a digest's vector would say nothing about the prompt."""
    progress = progress or Silent()
    distinct = list(dict.fromkeys(t for t in texts if t and not _is_digest(t)))
    out: dict[str, np.ndarray] = {}
    progress.start("embed prompts", len(distinct), "prompts")
    try:
        for i in range(0, len(distinct), EMBED_BATCH):
            batch = distinct[i : i + EMBED_BATCH]
            matrix = np.asarray(embedder.embed(batch), dtype=np.float32)  # (B, D)
            for text, row in zip(batch, matrix, strict=True):
                if float(row @ row) > 0:  # an all-zero row is the embedder's "no text"
                    out[text] = row
            progress.advance(len(batch))
    finally:
        progress.finish()
    return out


def profile(
    key: str, requests: Sequence[Request], state: KeyState, vectors: dict[str, np.ndarray]
) -> clusters.Profile:
    """What ``clusters`` links keys by: address ranges and activity over all the key's
    requests, template fingerprints of its last window, centroid of all its embeddings."""
    prefixes = frozenset(p for p in (clusters.client_prefix(r.client) for r in requests) if p)
    fingerprints: frozenset[str] = frozenset()
    for family in state.families:
        if hasattr(family, "fingerprints"):
            fingerprints = frozenset(str(f) for f in family.fingerprints())
    rows = [vectors[r.text] for r in requests if r.text in vectors]
    centroid = np.mean(np.stack(rows), axis=0) if rows else None  # (D,)
    return clusters.Profile(
        key, prefixes, fingerprints, clusters.activity(r.ts for r in requests), centroid
    )


def examples(requests: Sequence[Request], count: int = EXAMPLES) -> tuple[str, ...]:
    """The first ``count`` distinct prompts of a key, each cut at ``EXAMPLE_CHARS``."""
    distinct = dict.fromkeys(r.text[:EXAMPLE_CHARS] for r in requests if r.text)
    return tuple(list(distinct)[:count])


def _reference(requests: Sequence[Request], vectors: dict[str, np.ndarray], embedder: str):
    """The window test's benign reference, from the requests' embeddings grouped by key.

    Raises:
        InputError: too little embedded traffic to calibrate the test (``Reference.build``).
    """
    from retort.guard.detect.features.window import Reference

    by_key: dict[str, list[np.ndarray]] = defaultdict(list)
    for r in requests:
        if r.text in vectors:
            by_key[r.key].append(vectors[r.text])
    stacked = {k: np.stack(v) for k, v in sorted(by_key.items())}
    return Reference.build(stacked, embedder=embedder)


def _verdict(
    key: str,
    own: Trace,
    group: ClusterScore | None,
    requests: Sequence[Request],
    flag_at: float,
) -> KeyScore:
    """A key's final score: its own peak, or its cluster's when that is higher (then the
    reasons say the key acts with others, and why they were grouped)."""
    if group is None or group.trace.score <= own.score:
        return KeyScore(
            key,
            own.score,
            own.score >= flag_at,
            own.reasons,
            group.id if group else None,
            own.requests,
            own.first_flag_at,
            own.history,
            own,
        )
    others = len(group.keys) - 1
    lead = f"acts with {others} other key{'s' if others != 1 else ''} ({group.evidence})"
    # the first reason says why the key is judged with the others; the rest name the cluster
    reasons = tuple(
        replace(r, words=f"{lead if n == 0 else 'cluster ' + group.id}: {r.words}")
        for n, r in enumerate(group.trace.reasons)
    )
    if not reasons:
        reasons = (Reason("cluster", float(len(group.keys)), lead, 0.0),)
    first = own.first_flag_at
    if group.trace.first_flag_ts is not None:
        # the key's own requests up to the moment its cluster was first flagged (at least 1:
        # a key joins a flagged campaign with its first request)
        mine = max(1, sum(1 for r in requests if r.ts <= group.trace.first_flag_ts))
        first = mine if first is None else min(first, mine)
    return KeyScore(
        key,
        group.trace.score,
        group.trace.score >= flag_at,
        reasons,
        group.id,
        own.requests,
        first,
        own.history,
        own,
        raised_by_cluster=True,
    )


def _order(request: Request) -> tuple[float, str]:
    return request.ts, request.key


def _is_digest(text: str) -> bool:
    return text.startswith("sha256:") and len(text) == 71
