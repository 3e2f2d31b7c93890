"""Benchmark: the latency the online extraction detector adds to a request (not a test).

Two parts, both reported:

1. End to end: the gateway as `retort guard serve` runs it, with the detector off, on with
   the hash embedder, and on with no embedder, each in its own process in front of one fast
   local upstream (the raw-asyncio fake of bench/guard.py, answering instantly), driven one
   request at a time (concurrency 1) by an httpx client over keep-alive, with varied prompts
   from many keys (half templated and asking logprobs, so keys get scored and climb the
   ladder's log/flag steps). Setups are interleaved in rounds (shuffled per round); the
   figure is the median over rounds of each setup's p50; the added p50 is paired by round.
2. In process: ``OnlineDetector.observe`` alone on the same traffic (µs per call, p50/p99), with
   and without the embedder (its thread runs meanwhile), i.e. what the event loop spends per
   request after the answer has gone.

    .venv/bin/python bench/detect_latency.py     # ~2 min → bench/results/detect_latency.json
    .venv/bin/python bench/detect_latency.py --rounds 5 --requests 2000
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "detect_latency.json"
KEYS = 50
TIER = """\
tiers:
  bench:
    requests_per_minute: 100000000
    output_tokens_per_minute: 10000000000
    logprobs: {top_k: 5}
"""
DETECTOR = """\
detector:
  enabled: true
  embedder: %s
  ladder:
    - {at: 0.5, action: log}
    - {at: 0.8, action: flag}
"""
SETUPS = {"off": None, "on-hash": "hash", "on-none": "none"}
WORDS = [
    "river",
    "bread",
    "cat",
    "sky",
    "music",
    "law",
    "tax",
    "stars",
    "cells",
    "poem",
    "code",
    "trade",
    "rain",
    "salt",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process ended ({proc.returncode})")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url}: not ready after {timeout:.0f}s")


def bodies(n: int, seed: int) -> list[tuple[int, dict]]:
    """(key index, request body): half the keys send templated CoT prompts asking logprobs."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = i % KEYS
        if key % 2:
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
            body = {"messages": [{"role": "user", "content": f"Tell me about {words}."}]}
        else:
            a, b = rng.randint(1, 999), rng.randint(1, 999)
            text = f"Q{i}: what is {a} times {b}? Think step by step and show your work."
            body = {"messages": [{"role": "user", "content": text}], "logprobs": True}
            body["top_logprobs"] = 5
        out.append((key, {"model": "bench-model", "max_tokens": 16, **body}))
    return out


def start_gateway(name: str, embedder: str | None, upstream: str, work: Path) -> dict:
    from retort.guard.keys import KeyStore

    policy, db = work / f"{name}.yaml", work / f"{name}.sqlite"
    policy.write_text(TIER + (DETECTOR % embedder if embedder else ""))
    store = KeyStore(db)
    secrets = [store.create(f"bench-{i}", "bench")[1] for i in range(KEYS)]
    port = free_port()
    # What `retort guard serve` runs, without the CLI's start-up around it.
    code = (
        "import uvicorn; from retort.guard.app import create_app; "
        f"uvicorn.run(create_app({upstream + '/v1'!r}, {str(policy)!r}, {str(db)!r}), "
        f"host='127.0.0.1', port={port}, log_level='warning', access_log=False)"
    )
    log = (work / f"{name}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/healthz", proc)
    return {"url": url, "secrets": secrets, "proc": proc}


def drive(setup: dict, traffic: list[tuple[int, dict]]) -> list[float]:
    """Each request's latency (ms), one at a time over one keep-alive connection."""
    out = []
    with httpx.Client(base_url=setup["url"], timeout=30) as client:
        for key, body in traffic:
            headers = {"Authorization": f"Bearer {setup['secrets'][key]}"}
            t0 = time.perf_counter()
            r = client.post("/v1/chat/completions", json=body, headers=headers)
            out.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
    return out


def end_to_end(rounds: int, requests: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="detect-bench-"))
    port = free_port()
    code = f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import guard; "
    code += f"guard.serve_upstream({port})"
    upstream = subprocess.Popen([sys.executable, "-c", code])
    setups = {}
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1/models", upstream)
        upstream_url = f"http://127.0.0.1:{port}"
        for name, embedder in SETUPS.items():
            setups[name] = start_gateway(name, embedder, upstream_url, work)
        for setup in setups.values():  # warm up: imports, first scores, the connection pool
            drive(setup, bodies(200, seed=0))
        runs: dict[str, list[dict]] = {name: [] for name in SETUPS}
        rng = random.Random(0)
        for r in range(rounds):
            order = list(SETUPS)
            rng.shuffle(order)
            traffic = bodies(requests, seed=r + 1)
            for name in order:
                ms = drive(setups[name], traffic)
                qs = statistics.quantiles(ms, n=100)
                runs[name].append({"p50": statistics.median(ms), "p99": qs[98]})
        out = {}
        for name in SETUPS:
            out[name] = {
                "p50_ms": statistics.median(x["p50"] for x in runs[name]),
                "p99_ms": statistics.median(x["p99"] for x in runs[name]),
                "added_p50_ms": statistics.median(
                    a["p50"] - b["p50"] for a, b in zip(runs[name], runs["off"], strict=True)
                ),
                "rounds": runs[name],
            }
        return out
    finally:
        for setup in setups.values():
            setup["proc"].terminate()
            setup["proc"].wait(10)
        upstream.terminate()


def in_process(requests: int) -> dict:
    from retort.guard.detect.embed import load_embedder
    from retort.guard.detect.model import Scorer
    from retort.guard.detect.online import OnlineDetector
    from retort.guard.detect.request import from_record
    from retort.guard.policy import Detector, Step

    ladder = (Step(at=0.5, action="log"), Step(at=0.8, action="flag"))
    out = {}
    for name in ("hash", "none"):
        config = Detector(enabled=True, embedder=name, ladder=ladder)
        embedder = load_embedder("hash") if name == "hash" else None
        detector = OnlineDetector(config, Scorer.load(None), embedder)
        traffic = bodies(requests, seed=99)
        records = [
            {"ts": 1000.0 + i * 0.5, "key": f"k{key}", "endpoint": "/v1/chat/completions"}
            | {"body": body, "usage": {"prompt_tokens": 20, "completion_tokens": 16}}
            | {"status": 200}
            for i, (key, body) in enumerate(traffic)
        ]
        us = []
        for record in records:
            t0 = time.perf_counter()
            detector.observe(from_record(record))  # the gateway also builds the Request
            us.append((time.perf_counter() - t0) * 1e6)
        detector.flush(120)
        detector.close()
        qs = statistics.quantiles(us, n=100)
        scored = sorted(us)[-len(us) // 10 :]  # every 10th request is a re-score
        out[name] = {
            "observe_p50_us": statistics.median(us),
            "observe_p90_us": qs[89],
            "observe_p99_us": qs[98],
            "mean_us": statistics.fmean(us),
            "slowest_tenth_mean_us": statistics.fmean(scored),
            "dropped_texts": detector.dropped,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1500)
    args = parser.parse_args()
    result = {
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "in_process": in_process(5000),
        "end_to_end": end_to_end(args.rounds, args.requests),
        "command": "python bench/detect_latency.py " + " ".join(sys.argv[1:]),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    for name, r in result["in_process"].items():
        print(
            f"observe ({name:4}): p50 {r['observe_p50_us']:.0f} µs, p90 {r['observe_p90_us']:.0f}"
            f" µs, p99 {r['observe_p99_us']:.0f} µs"
        )
    for name, r in result["end_to_end"].items():
        print(
            f"{name:8} p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
            f"added p50 {r['added_p50_ms']:+.3f} ms"
        )


if __name__ == "__main__":
    main()
