"""retort's in-memory moving window (limits' own loses entries under asyncio concurrency;
tests/guard/test_limits.py hammers it with 64 clients)."""

from __future__ import annotations

import asyncio
import time

from limits import RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter

from retort.moving_window import MemoryStorage


def test_window_admits_up_to_its_limit_and_again_once_entries_age_out():
    async def run() -> None:
        storage = MemoryStorage()
        assert await storage.acquire_entry("k", 3, 1, 2)
        assert not await storage.acquire_entry("k", 3, 1, 2)  # 2 + 2 > 3
        assert await storage.acquire_entry("k", 3, 1, 1)
        assert not await storage.acquire_entry("k", 3, 1, 1)
        assert not await storage.acquire_entry("other", 3, 1, 4)  # more than the window
        start, count = await storage.get_moving_window("k", 3, 1)
        assert count == 3 and time.time() - 1 < start <= time.time()
        await asyncio.sleep(1.05)
        assert (await storage.get_moving_window("k", 3, 1))[1] == 0
        assert await storage.acquire_entry("k", 3, 1, 3)

    asyncio.run(run())


def test_limits_strategy_runs_on_it():
    async def run() -> None:
        limiter = MovingWindowRateLimiter(MemoryStorage())
        item = RateLimitItemPerSecond(2)
        assert [await limiter.hit(item, "k") for _ in range(3)] == [True, True, False]
        stats = await limiter.get_window_stats(item, "k")
        assert stats.remaining == 0
        await limiter.clear(item, "k")
        assert await limiter.hit(item, "k")

    asyncio.run(run())
