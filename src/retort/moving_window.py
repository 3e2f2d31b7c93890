"""limits' in-memory storage with a moving window that cannot lose entries under asyncio.

limits' async ``MemoryStorage`` (5.8.0, the newest) prunes moving windows in a background
task that holds a key's lock across a thread hop, and drops the lock of a key whose window
emptied. A coroutine still waiting on the dropped lock then inserts while the next prune runs,
and that prune's stale cut-off throws fresh entries away (limits issue #277; reproduced on
5.8.0): under 64 concurrent clients a 40-a-second window admitted 48. Here a window's reads and
writes never await, so on one event loop each is atomic, and expired entries go inline.
Counters and sliding windows are limits' own.
"""

from __future__ import annotations

import time
from collections import deque

from limits.aio.storage import MemoryStorage as LimitsMemoryStorage


class MemoryStorage(LimitsMemoryStorage):
    """Drop-in for ``limits.aio.storage.MemoryStorage`` (one process, one event loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.windows: dict[str, deque[float]] = {}  # each key's entry times, oldest first

    def _live(self, key: str, expiry: float, now: float) -> deque[float]:
        window = self.windows.setdefault(key, deque())
        while window and window[0] <= now - expiry:
            window.popleft()
        return window

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        now = time.time()
        window = self._live(key, expiry, now)
        if amount > limit or len(window) + amount > limit:
            return False
        window.extend([now] * amount)
        return True

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """The oldest entry still in the window (``now`` when none) and how many there are."""
        now = time.time()
        window = self._live(key, expiry, now)
        if not window:
            del self.windows[key]  # keys seen once do not pile up
            return now, 0
        return window[0], len(window)

    async def clear(self, key: str) -> None:
        self.windows.pop(key, None)
        await super().clear(key)

    async def reset(self) -> int | None:
        count = len(self.windows)
        self.windows.clear()
        return max(count, await super().reset() or 0)
