"""Clusters: which evidence links two keys, union-find grouping and its ids, and a hand-made
hydra (30 keys, one /24, one template, synchronized bursts) caught as one unit while 20 benign
users behind one corporate NAT stay apart."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from retort.guard.detect import clusters
from retort.guard.detect.clusters import Profile

HOUR = 3600.0
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def test_client_prefix_is_a_24_for_ipv4_and_a_48_for_ipv6():
    assert clusters.client_prefix("203.0.113.77") == "203.0.113.0/24"
    assert clusters.client_prefix("203.0.113.77:51234") == "203.0.113.0/24"
    assert clusters.client_prefix("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert clusters.client_prefix("[2001:db8:1:2::5]:443") == "2001:db8:1::/48"
    assert clusters.client_prefix("::ffff:198.51.100.9") == "198.51.100.0/24"
    assert clusters.client_prefix("testclient") is None
    assert clusters.client_prefix(None) is None


def test_timing_correlation_known_answers():
    bursts = {b: 3 for b in range(0, 60, 6)}  # 3 requests every hour, nothing in between
    assert clusters.timing_correlation(bursts, dict(bursts)) == pytest.approx(1.0)
    shifted = {b + 3: 3 for b in range(0, 60, 6)}  # the same rhythm, half an hour apart
    # over bins 3..54: 9 bursts each, never in the same bin: r = -(81/52) / (9 - 81/52)
    assert clusters.timing_correlation(bursts, shifted) == pytest.approx(-(81 / 52) / (9 - 81 / 52))
    # a constant rate has nothing to correlate; an overlap under an hour is too short
    steady = {b: 2 for b in range(60)}
    assert clusters.timing_correlation(bursts, steady) is None
    assert clusters.timing_correlation({0: 1, 1: 2}, {0: 1, 1: 2}) is None
    assert clusters.timing_correlation({}, bursts) is None


def _profiles_hydra_and_nat(n_hydra: int = 30, n_nat: int = 20) -> list[Profile]:
    rng = np.random.default_rng(0)
    bursts = {b: 2 for b in range(0, 60, 6)}
    out = [
        Profile(
            f"hydra-{i:02d}",
            frozenset({"203.0.113.0/24"}),
            frozenset({"p:template", f"s:own-{i}"}),
            dict(bursts),
        )
        for i in range(n_hydra)
    ]
    for i in range(n_nat):
        bins = rng.choice(48, size=15, replace=False)
        out.append(
            Profile(
                f"acme-{i:02d}",
                frozenset({"198.51.100.0/24"}),
                frozenset({f"p:acme-{i}"}),
                {int(b): 1 for b in bins},
            )
        )
    return out


def test_two_kinds_link_the_hydra_and_one_shared_nat_does_not():
    groups = clusters.cluster(_profiles_hydra_and_nat())
    assert len(groups) == 1
    (hydra,) = groups
    assert hydra.id == "c1"
    assert hydra.keys == tuple(f"hydra-{i:02d}" for i in range(30))
    assert hydra.words == "shared 203.0.113.0/24 addresses, the same prompt template, " + (
        "synchronized timing"
    )
    pair = hydra.links[0]
    assert set(pair.evidence) == {"network", "template", "timing"}


def test_one_kind_of_evidence_never_links():
    same_net = [Profile(k, frozenset({"10.1.2.0/24"})) for k in ("a", "b")]
    same_template = [Profile(k, fingerprints=frozenset({"p:x"})) for k in ("a", "b")]
    assert clusters.cluster(same_net) == []
    assert clusters.cluster(same_template) == []
    both = [Profile(k, frozenset({"10.1.2.0/24"}), frozenset({"p:x"})) for k in ("a", "b")]
    assert [g.keys for g in clusters.cluster(both)] == [("a", "b")]


def test_ids_go_by_size_then_smallest_key_and_chains_join():
    def pair(a: str, b: str, tag: str) -> list[Profile]:
        return [Profile(k, frozenset({f"{tag}/24"}), frozenset({tag})) for k in (a, b)]

    profiles = [*pair("m", "n", "x"), *pair("b", "c", "y"), *pair("c2", "d", "z")]
    # "e" shares range and template "y" with b and c: one group of three
    profiles.append(Profile("e", frozenset({"y/24", "w/24"}), frozenset({"y", "w"})))
    groups = clusters.cluster(profiles)
    assert [(g.id, g.keys) for g in groups] == [
        ("c1", ("b", "c", "e")),  # size 3 first
        ("c2", ("c2", "d")),  # size 2, smallest key "c2" < "m"
        ("c3", ("m", "n")),
    ]


def test_prompt_overlap_ignores_the_direction_all_prompts_share():
    # every prompt leans on one common direction (mean pairwise cosine about 0.14); keys
    # "n0", "n1" keep to one narrow subject. Their centroids' cosine would link all the
    # varied keys; the mean cosine between their prompts links only the narrow pair.
    rng = np.random.default_rng(1)
    common, topic = np.eye(64)[0], np.eye(64)[1]

    def prompts(n: int, centre: np.ndarray, spread: float) -> np.ndarray:
        rows = centre + spread * rng.normal(size=(n, 64)) / 8  # (n, 64)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    keys = {f"v{i}": prompts(60, 0.4 * common, 1.0) for i in range(6)}
    keys |= {f"n{i}": prompts(60, topic, 0.3) for i in range(2)}
    profiles = [Profile(k, centroid=v.mean(axis=0)) for k, v in sorted(keys.items())]
    cents = {p.key: p.centroid / np.linalg.norm(p.centroid) for p in profiles}
    assert cents["v0"] @ cents["v1"] > 0.8  # centroid cosine: varied keys look alike
    names, overlap = clusters.overlaps(profiles)
    at = {(a, b): overlap[i, j] for i, a in enumerate(names) for j, b in enumerate(names)}
    assert at[("n0", "n1")] > clusters.EMBEDDING_OVERLAP
    assert at[("v0", "v1")] == pytest.approx((keys["v0"] @ keys["v1"].T).mean(), rel=1e-9)
    assert max(at[(f"v{i}", f"v{j}")] for i in range(6) for j in range(6) if i != j) < 0.3


# ---- end to end: the real readers, families, embedder and scorer through scan() -------------


def hydra_records(n_hydra: int = 30, n_nat: int = 20, per_key: int = 20) -> list[dict]:
    """A hydra: ``n_hydra`` keys on 203.0.113.0/24, one prompt template, bursts in the same
    10 minutes of every hour. And ``n_nat`` benign users behind one corporate NAT address
    (198.51.100.7) asking varied questions at their own times of the working day."""
    rng = random.Random(7)
    words = [
        "budget",
        "invoice",
        "meeting",
        "python",
        "error",
        "deploy",
        "contract",
        "sales",
        "travel",
        "policy",
        "report",
        "graph",
        "sql",
        "latency",
        "customer",
        "refund",
        "laptop",
        "printer",
        "holiday",
        "hiring",
        "roadmap",
        "email",
        "summary",
        "translate",
        "spanish",
        "poem",
        "recipe",
        "garden",
        "bicycle",
        "insurance",
        "tax",
        "mortgage",
    ]
    records = []
    for i in range(n_hydra):
        for j in range(per_key):
            burst = j // 2  # two requests per key per burst, one burst an hour
            ts = T0 + 9 * HOUR + burst * HOUR + 60 + 7 * i + 200 * (j % 2)
            item = f"item {i * per_key + j}: {rng.choice(words)} {rng.choice(words)}"
            prompt = (
                f"Solve the following problem carefully. {item}. "
                "Think step by step and show all of your reasoning."
            )
            records.append(_record(ts, f"hydra-{i:02d}", f"203.0.113.{10 + i}", prompt, 900))
    for i in range(n_nat):
        times = sorted(rng.uniform(9 * HOUR, 17 * HOUR) for _ in range(per_key))
        for ts in times:
            prompt = " ".join(rng.sample(words, 9)) + "?"  # no two alike, no shared frame
            records.append(_record(T0 + ts, f"acme-{i:02d}", "198.51.100.7", prompt, 120))
    records.sort(key=lambda r: (r["ts"], r["key"]))
    return records


def _record(ts: float, key: str, client: str, prompt: str, completion: int) -> dict:
    return {
        "ts": round(ts, 3),
        "key": key,
        "client": client,
        "endpoint": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": prompt}]},
        "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": completion},
        "status": 200,
    }


def write_log(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def rate_only_scorer():
    """A known-answer model: the score rises only with the request rate. Each hydra key sends
    ~2 requests an hour (far under 10, the flag line); the 30 together send ~60."""
    from retort.guard.detect.model import Scorer, Weight

    weights = {"volume.requests_per_hour": Weight(mean=10.0, scale=10.0, weight=1.0)}
    return Scorer(weights, bias=0.0, flag_at=0.5, source="test: rate only")


def test_scan_catches_a_hydra_of_keys_each_under_the_threshold(tmp_path):
    from retort.guard.detect.scan import scan

    log = tmp_path / "traffic.jsonl"
    write_log(log, hydra_records())
    result = scan([log], embedder=_embedder(), scorer=rate_only_scorer())
    assert [(c.id, len(c.keys)) for c in result.clusters] == [("c1", 30)]
    (hydra,) = result.clusters
    assert hydra.flagged and hydra.trace.score > 0.9
    assert "shared 203.0.113.0/24 addresses" in hydra.evidence
    assert "the same prompt template" in hydra.evidence
    assert "synchronized timing" in hydra.evidence
    by_key = {k.key: k for k in result.keys}
    for i in range(30):
        k = by_key[f"hydra-{i:02d}"]
        assert k.own.score < 0.5  # each key alone is under the line ...
        assert k.flagged and k.cluster == "c1" and k.raised_by_cluster  # ... caught together
        assert k.reasons[0].words.startswith("acts with 29 other keys (shared 203.0.113.0/24")
        assert k.reasons[0].feature == "volume.requests_per_hour"
    for i in range(20):
        k = by_key[f"acme-{i:02d}"]
        assert k.cluster is None and not k.flagged


def _embedder():
    from retort.guard.detect.embed import load_embedder

    return load_embedder("hash")


def test_a_chain_of_co_tenants_is_split_into_its_dense_cores():
    # two tight groups (cliques of four) joined by a chain of three keys through one range
    def link(a: str, b: str) -> clusters.Link:
        return clusters.Link(a, b, {"network": "x", "template": "y"})

    clique_a = [f"a{i}" for i in range(4)]
    clique_b = [f"b{i}" for i in range(4)]
    found = [link(x, y) for g in (clique_a, clique_b) for i, x in enumerate(g) for y in g[i + 1 :]]
    found += [link("a0", "m1"), link("m1", "m2"), link("m2", "m3"), link("m3", "b0")]
    keys = [*clique_a, *clique_b, "m1", "m2", "m3"]
    got = clusters.groups([Profile(k, frozenset({"10.0.0.0/24"})) for k in keys], found)
    # the chain left over is short enough to be dense itself (each linked to half the rest)
    assert [g.keys for g in got] == [tuple(clique_a), tuple(clique_b), ("m1", "m2", "m3")]
    assert all(link.a in g.keys and link.b in g.keys for g in got for link in g.links)
