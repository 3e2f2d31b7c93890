"""``retort guard simulate``: labelled API traffic for tests, docs and tuning the detector.

Keys of every style in ``styles.STYLES`` (benign people and customers, the hard negatives,
and extraction campaigns) send requests built from real text (``corpora``) over ``hours``
from ``start``; each tier's requests-per-minute limit turns what exceeds it into 429s, as the
gateway would. The result is the gateway's access-log format (``guard/export.py``), one record
per request sorted by time, and the labels beside it:
``{"seed", "corpus", "keys": {KEY: {"label", "style", "cluster"}}}``. Nothing in a record
names its style.

Deterministic: every key draws from its own ``random.Random("{seed}/{style}/{index}")`` and
the networks from one of their own, so the same arguments give the same bytes. Tune on one
seed and split, report on another: the splits share no source text.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retort.errors import ConfigError
from retort.guard.detect.corpora import load
from retort.guard.detect.styles import STYLES, Style
from retort.guard.detect.styles.traffic import TIERS, KeyTraffic

START = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
MODELS = ("retort-large", "retort-small")
CORPORATE_SHARE = 0.12  # of "corporate" keys behind one of the few office NATs
CORPORATE_NATS = 3
CLOUD_RANGES = 6  # cloud /24s the server-side customers share
PROXY_RANGES = 3  # /24s behind one attacker's or one cluster's rotating proxies
PROXY_EXITS = 24  # addresses used in each proxy /24
# First octets of public unicast space the simulated addresses come from.
_OCTETS = tuple(o for o in range(11, 224) if o not in (100, 127, 169, 172, 192, 198, 203))


@dataclass(frozen=True)
class StyleCount:
    """What one style contributed to a simulated log."""

    label: str
    keys: int
    requests: int
    refused: int


def simulate(
    seed: int = 0,
    split: str = "a",
    scale: float = 1.0,
    hours: float = 72.0,
    start: float = START,
    styles: Mapping[str, Style] | None = None,
    extras: tuple[str, ...] = (),
    bodies: str = "full",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Simulated traffic and its labels.

    Args:
        seed: every random stream derives from it.
        split: the corpus half the text comes from (``a`` to tune, ``b`` to report).
        scale: multiplies every style's key count (at least one key each; 1.0 is 340
            benign and 66 attacker keys, about 68,000 requests over 72 hours).
        hours: the length of the log, from ``start`` (unix seconds).
        styles: the style table (default ``STYLES``).
        extras: optional corpora (``corpora.EXTRAS``) to add where installed.
        bodies: ``full`` or ``hashes`` (text as sha256 digests, as ``audit: {bodies: hashes}``).

    Returns:
        (records sorted by time, labels).

    Raises:
        ConfigError: a non-positive scale or hours, an unknown split, tier or bodies value.
    """
    if not scale > 0:
        raise ConfigError(f"--scale: {scale} must be above 0 (1.0 is ~360 keys)")
    if not hours > 0:
        raise ConfigError(f"--hours: {hours} must be above 0")
    if bodies not in ("full", "hashes"):
        raise ConfigError(f"bodies: '{bodies}' is not one of full, hashes")
    corpus = load(split, extras)
    end = start + hours * 3600
    table = STYLES if styles is None else styles
    networks = _Networks(random.Random(f"{seed}/networks"))
    ids: set[str] = set()
    labels: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    for name in sorted(table):
        style = table[name]
        count = max(1, round(style.keys * scale)) if style.keys > 0 else 0
        groups = max(1, round(count / style.group)) if count else 0
        index = 0
        for g in range(groups):
            size = count // groups + (g < count % groups)
            cluster = f"{name}-{g + 1}" if style.group > 1 else None
            shared = networks.proxies() if style.group > 1 else None
            group = []
            for _ in range(size):
                rng = random.Random(f"{seed}/{name}/{index}")
                key = _key_id(seed, name, index, ids)
                tier = rng.choices(
                    sorted(style.tiers), [style.tiers[t] for t in sorted(style.tiers)]
                )[0]
                if tier not in TIERS:
                    raise ConfigError(
                        f"style {name}: unknown tier '{tier}'; known: {sorted(TIERS)}"
                    )
                clients, rotate = networks.clients(style.network, rng, shared)
                model = MODELS[0] if rng.random() < 0.85 else MODELS[1]
                traffic = KeyTraffic(
                    key, name, tier, model, clients, rotate, corpus, rng, start, end
                )
                group.append(traffic)
                labels[key] = {"label": style.label, "style": name, "cluster": cluster}
                index += 1
            style.generate(group, style.params)
            for traffic in group:
                records += limit(
                    [r for r in traffic.records if start <= r["ts"] < end], traffic.tier
                )
    logged = {r["key"] for r in records}
    labels = {k: v for k, v in sorted(labels.items()) if k in logged}
    if bodies == "hashes":
        from retort.guard.audit import hashed_body

        for record in records:
            record["body"] = hashed_body(record["body"])
    records.sort(key=lambda r: (r["ts"], r["key"]))
    return records, {"seed": seed, "corpus": f"{corpus.name}:{split}", "split": split,
                     "scale": scale, "hours": hours, "start": start, "keys": labels}  # fmt: skip


def limit(records: list[dict[str, Any]], tier: str) -> list[dict[str, Any]]:
    """Refuse, as the gateway's moving window would, each request past the tier's requests per
    minute: status 429, no usage, ``rate_limited`` for ``requests_per_minute``."""
    rpm = TIERS[tier]["rpm"]
    admitted: deque[float] = deque()
    records.sort(key=lambda r: r["ts"])
    for record in records:
        while admitted and admitted[0] <= record["ts"] - 60:
            admitted.popleft()
        if len(admitted) < rpm:
            admitted.append(record["ts"])
            continue
        record.update(
            status=429,
            usage={"prompt_tokens": None, "completion_tokens": None},
            latency_ms=round(record["latency_ms"] % 3 + 0.5, 1),
            decision="rate_limited",
            reason="requests_per_minute",
        )
    return records


def summary(records: list[dict[str, Any]], labels: dict[str, Any]) -> dict[str, StyleCount]:
    """Keys, requests and 429s per style, styles sorted by label then name."""
    keys = labels["keys"]
    requests: dict[str, list[int]] = {}
    for record in records:
        counts = requests.setdefault(keys[record["key"]]["style"], [0, 0])
        counts[0] += 1
        counts[1] += record["status"] == 429
    styles = sorted({(v["label"], v["style"]) for v in keys.values()})
    return {
        style: StyleCount(label, sum(v["style"] == style for v in keys.values()), *requests[style])
        for label, style in styles
    }


def labels_path(out: str | Path) -> Path:
    """Where the labels of a traffic file go: ``traffic.jsonl`` → ``traffic.labels.json``."""
    out = Path(out)
    stem = out.name.removesuffix(".gz").removesuffix(".jsonl")
    return out.with_name(f"{stem}.labels.json")


def write(out: str | Path, **kwargs: Any) -> dict[str, StyleCount]:
    """Simulate (``kwargs`` as ``simulate`` takes them) and write the traffic (JSONL, gzip for
    a ``.gz`` name) and its labels beside it, each whole through a temporary file.

    Returns:
        The summary per style.
    """
    out = Path(out)
    records, labels = simulate(**kwargs)
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    if out.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)  # no timestamp in the header: same bytes every run
    _replace(out, data)
    _replace(labels_path(out), (json.dumps(labels, indent=1) + "\n").encode())
    return summary(records, labels)


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _key_id(seed: int, style: str, index: int, taken: set[str]) -> str:
    """A key id as the gateway's (12 hex digits); derived, so it says nothing of the style."""
    salt = 0
    while True:
        key = hashlib.sha256(f"{seed}/{style}/{index}/{salt}".encode()).hexdigest()[:12]
        if key not in taken:
            taken.add(key)
            return key
        salt += 1


class _Networks:
    """Client addresses: every /24 handed out once, except the shared ones (office NATs and
    cloud ranges, benign; a cluster's proxies, not)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()
        self.nats = [self.prefix() for _ in range(CORPORATE_NATS)]
        self.cloud = [self.prefix() for _ in range(CLOUD_RANGES)]

    def prefix(self) -> str:
        while True:
            prefix = (
                f"{self.rng.choice(_OCTETS)}.{self.rng.randrange(256)}.{self.rng.randrange(256)}"
            )
            if prefix not in self.used:
                self.used.add(prefix)
                return prefix

    def host(self, prefix: str) -> str:
        return f"{prefix}.{self.rng.randrange(1, 255)}"

    def proxies(self) -> tuple[str, ...]:
        """The exit addresses of one proxy pool: a few /24s, many addresses in each."""
        return tuple(
            f"{prefix}.{h}"
            for prefix in (self.prefix() for _ in range(PROXY_RANGES))
            for h in sorted(self.rng.sample(range(1, 255), PROXY_EXITS))
        )

    def clients(
        self, network: str, rng: random.Random, shared: tuple[str, ...] | None
    ) -> tuple[tuple[str, ...], bool]:
        """(addresses, rotating) of one key on this kind of network."""
        if network == "proxy":
            return shared or self.proxies(), True
        if network == "cloud":
            prefix = rng.choice(self.cloud)
            return tuple(self.host(prefix) for _ in range(rng.randint(1, 2))), False
        if network == "corporate" and rng.random() < CORPORATE_SHARE:
            nat = rng.choice(self.nats)  # the office's NAT: a handful of addresses
            return tuple(f"{nat}.{h}" for h in (rng.randint(10, 14), rng.randint(10, 14))), False
        home = self.host(self.prefix())
        return (home, *(self.host(self.prefix()) for _ in range(rng.randint(0, 2)))), False
