"""Keys acting together: link keys by the evidence two of them share, then group them.

A campaign spread over many keys ("hydra") keeps each key under every per-key threshold; the
keys still give themselves away by what they share. Four kinds of evidence between two keys:

- network: a client address range in common (an IPv4 /24 or an IPv6 /48);
- template: a prompt-template fingerprint in common (``Templates.fingerprints()``);
- timing: their per-10-minute request counts rise and fall together over the span both were
  active (Pearson correlation);
- embedding: their prompts overlap: the mean cosine between a prompt of one and a prompt of
  the other (the dot product of their centroids) is as high as between paraphrases.

Two keys are linked only on at least two kinds (``MIN_KINDS``). Any one kind alone is common
among innocent keys: a company's users share its NAT's /24, customers of one SaaS tool share
its template, office hours synchronise everyone's timing, and one subject draws many users.
Two independent coincidences are rare; a campaign run from one proxy pool with one script
shows two or more.

Linked keys are grouped into dense cores, not chains: a group keeps only keys linked to at
least ``MIN_DENSITY`` of its other members. A campaign's keys share the same pool, script and
subject, so each is linked to nearly every other; innocent co-tenants of one cloud range link
in chains (A to B by a framework's prompt, B to C by office hours), and a chain joined by
union-find made one 22-key "cluster" of unrelated apps on the simulator, every one of them
flagged by the two attackers chained in. Peeling the least-linked key until the rest is dense
(then repeating on what was peeled) splits such a chain into its real groups.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

KINDS = ("network", "template", "timing", "embedding")  # the order evidence is named in
MIN_KINDS = 2  # see the module docstring: one kind alone links innocent keys
MIN_DENSITY = 0.5  # a group member is linked to at least this share of the other members
BIN_SECONDS = 600.0  # timing is compared as requests per 10 minutes
MIN_OVERLAP_BINS = 6  # an hour in common, at least, before timing counts as evidence
TIMING_CORRELATION = 0.7
EMBEDDING_OVERLAP = 0.6
# A range (or fingerprint) shared by more keys than this is infrastructure everyone uses (a
# mobile carrier's CGNAT, an SDK's default prompt), not a campaign's: it is not evidence.
MAX_SHARERS = 1000


@dataclass
class Profile:
    """What linking needs of one key.

    Attributes:
        key: the key id.
        prefixes: the client address ranges it came from (``client_prefix``).
        fingerprints: its prompt-template fingerprints.
        activity: requests per 10-minute bin (bin = ``int(ts // BIN_SECONDS)``).
        centroid: mean of its prompt embeddings, shape (D,), or None without embeddings.
    """

    key: str
    prefixes: frozenset[str] = frozenset()
    fingerprints: frozenset[str] = frozenset()
    activity: dict[int, int] = field(default_factory=dict)
    centroid: np.ndarray | None = None


@dataclass(frozen=True)
class Link:
    """The evidence between two keys (``a`` < ``b``): kind → what they share, in words."""

    a: str
    b: str
    evidence: dict[str, str]


@dataclass(frozen=True)
class Group:
    """Keys acting together: ``id`` ("c1", ...), members sorted, the links that joined them,
    and the evidence in words ("shared 203.0.113.0/24 addresses, the same prompt template")."""

    id: str
    keys: tuple[str, ...]
    links: tuple[Link, ...]
    words: str


def client_prefix(client: str | None) -> str | None:
    """The address range a client address belongs to: ``203.0.113.0/24`` for IPv4,
    ``2001:db8:1::/48`` for IPv6; None for a missing or unparsable address. Accepts the
    ``host:port`` and ``[v6]:port`` forms a proxy may log."""
    if not client:
        return None
    text = client.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # IPv4 with a port; IPv6 has at least two colons
        text = text.split(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    bits = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


def activity(timestamps: Iterable[float]) -> dict[int, int]:
    """Requests per 10-minute bin."""
    return dict(Counter(int(ts // BIN_SECONDS) for ts in timestamps))


def timing_correlation(a: dict[int, int], b: dict[int, int]) -> float | None:
    """Pearson correlation of two keys' per-bin counts over the bins both were active in
    (from the later first bin to the earlier last); None when they overlap less than
    ``MIN_OVERLAP_BINS`` or either count is constant there (nothing to correlate)."""
    if not a or not b:
        return None
    lo, hi = max(min(a), min(b)), min(max(a), max(b))
    if hi - lo + 1 < MIN_OVERLAP_BINS:
        return None
    bins = range(lo, hi + 1)
    x = np.array([a.get(i, 0) for i in bins], dtype=np.float64)  # (T,)
    y = np.array([b.get(i, 0) for i in bins], dtype=np.float64)  # (T,)
    x, y = x - x.mean(), y - y.mean()
    norm = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / norm if norm > 0 else None


def overlaps(profiles: Sequence[Profile]) -> tuple[list[str], np.ndarray]:
    """The keys with embeddings (sorted) and their pairwise prompt overlap, shape (K, K): the
    mean cosine between a prompt of one key and a prompt of the other, which is the dot
    product of their centroids (means of unit vectors).

    Not the cosine of the centroids: prompts share a direction common to all sentences (mean
    pairwise cosine ρ > 0), and the centroid of n varied prompts tends to it, so two unrelated
    busy keys' centroid cosine approaches ρ / (ρ + (1 − ρ)/n) → 1. Centring first needs a
    centre, and the only one at hand (the keys' median) is the hydra itself when its keys
    outnumber the rest. The mean cosine stays near ρ for varied prompts and is high only when
    both keys keep to the same narrow region: one template, one subject."""
    having = sorted(
        (p for p in profiles if p.centroid is not None and p.centroid.size), key=lambda p: p.key
    )
    if len(having) < 2:
        return [], np.zeros((0, 0))
    stacked = np.stack([p.centroid for p in having]).astype(np.float64)  # (K, D)
    return [p.key for p in having], stacked @ stacked.T  # (K, K)


def links(
    profiles: Sequence[Profile],
    min_kinds: int = MIN_KINDS,
    timing_at: float = TIMING_CORRELATION,
    overlap_at: float = EMBEDDING_OVERLAP,
) -> list[Link]:
    """Every pair of keys with evidence of at least ``min_kinds`` kinds, sorted by key pair.

    Candidate pairs come from what can be indexed (shared ranges, shared fingerprints, close
    prompts); timing is then checked only for them, since timing alone never links."""
    by_key = {p.key: p for p in profiles}
    shared: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for kind, attr in (("network", "prefixes"), ("template", "fingerprints")):
        index: dict[str, list[str]] = defaultdict(list)
        for p in profiles:
            for item in getattr(p, attr):
                index[item].append(p.key)
        for item, keys in index.items():
            if len(keys) < 2 or len(keys) > MAX_SHARERS:
                continue
            keys = sorted(keys)
            for i, a in enumerate(keys):
                for b in keys[i + 1 :]:
                    shared[(a, b)][kind].append(item)
    names, overlap = overlaps(profiles)
    for i, j in zip(*np.nonzero(np.triu(overlap >= overlap_at, k=1)), strict=True):
        shared[(names[i], names[j])]["embedding"].append(f"{overlap[i, j]:.2f}")
    out = []
    for (a, b), kinds in sorted(shared.items()):
        if len(kinds) + 1 < min_kinds:  # even with timing it could not reach min_kinds
            continue
        r = timing_correlation(by_key[a].activity, by_key[b].activity)
        if r is not None and r >= timing_at:
            kinds["timing"].append(f"{r:.2f}")
        if len(kinds) >= min_kinds:
            out.append(Link(a, b, {k: _pair_words(k, kinds[k]) for k in KINDS if k in kinds}))
    return out


def groups(profiles: Sequence[Profile], found: Sequence[Link]) -> list[Group]:
    """Dense cores of the links (see the module docstring); groups of two or more keys, ids
    "c1", "c2", ... by size (largest first), then by smallest key."""
    neighbours: dict[str, set[str]] = defaultdict(set)
    for link in found:
        neighbours[link.a].add(link.b)
        neighbours[link.b].add(link.a)
    cores: list[list[str]] = []
    for component in _components(sorted(neighbours), neighbours):
        cores += _dense_cores(component, neighbours)
    ordered = sorted((sorted(c) for c in cores), key=lambda m: (-len(m), m[0]))
    by_key = {p.key: p for p in profiles}
    out = []
    for n, keys in enumerate(ordered, start=1):
        inside = set(keys)
        joined = tuple(link for link in found if link.a in inside and link.b in inside)
        out.append(Group(f"c{n}", tuple(keys), joined, _group_words(keys, joined, by_key)))
    return out


def _components(keys: Iterable[str], neighbours: dict[str, set[str]]) -> list[set[str]]:
    """Connected components among ``keys`` (links to keys outside them ignored)."""
    left, out = set(keys), []
    while left:
        start = min(left)
        seen, todo = {start}, [start]
        while todo:
            for other in neighbours[todo.pop()] & left:
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
        left -= seen
        out.append(seen)
    return out


def _dense_cores(component: set[str], neighbours: dict[str, set[str]]) -> list[set[str]]:
    """Peel the least-linked key (ties: the largest key, so results are stable) until every
    key left is linked to ``MIN_DENSITY`` of the others; that core is a group, and the
    peeled keys are searched again for cores of their own."""
    core = set(component)
    degree = {k: len(neighbours[k] & core) for k in core}
    while len(core) >= 2:
        low = max(core, key=lambda k: (-degree[k], k))
        if degree[low] >= MIN_DENSITY * (len(core) - 1):
            break
        core.remove(low)
        for other in neighbours[low] & core:
            degree[other] -= 1
    if len(core) < 2:
        return []
    cores = [core]
    for rest in _components(component - core, neighbours):
        if len(rest) >= 2:
            cores += _dense_cores(rest, neighbours)
    return cores


def cluster(profiles: Sequence[Profile], **thresholds: float) -> list[Group]:
    """The groups of keys acting together (``links`` then ``groups``)."""
    return groups(profiles, links(profiles, **thresholds))


def _pair_words(kind: str, items: list[str]) -> str:
    items = sorted(items)
    if kind == "network":
        return f"shared {items[0]} addresses"
    if kind == "template":
        return "the same prompt template"
    if kind == "timing":
        return f"synchronized timing (r = {items[0]})"
    return f"overlapping prompts (mean cosine {items[0]})"


def _group_words(keys: list[str], joined: Sequence[Link], by_key: dict[str, Profile]) -> str:
    """The group's evidence in words, kinds in ``KINDS`` order, each named once; the network
    kind names the range most members share."""
    kinds = {k for link in joined for k in link.evidence}
    parts = []
    for kind in KINDS:
        if kind not in kinds:
            continue
        if kind == "network":
            counts = Counter(prefix for k in keys for prefix in by_key[k].prefixes)
            shared = sorted((-n, prefix) for prefix, n in counts.items() if n >= 2)
            more = f" and {len(shared) - 1} other address ranges" if len(shared) > 1 else ""
            parts.append(f"shared {shared[0][1]}{more or ' addresses'}")
        elif kind == "template":
            parts.append("the same prompt template")
        elif kind == "timing":
            parts.append("synchronized timing")
        else:
            parts.append("overlapping prompts")
    return ", ".join(parts)
