"""Per-key budgets on the `limits` library, in memory or in Redis: a moving window for
requests, the sliding-window counter for tokens (O(1) whatever a request costs).

A request first *reserves* what it may use (1 request, its estimated input tokens, max_tokens
× n output tokens, one concurrent slot) and is admitted only if every budget holds
``used in the window + reserved by requests in flight + this one ≤ limit``. The in-flight
reservations are one atomic counter per budget (INCRBY in Redis), added before the window is
read, so two replicas admitting at once each see the other's reservation: the check errs on
refusing, never on admitting. After the upstream answers, ``settle`` records the real usage
in the window (all of it, even past the limit, so the requests after an overrun wait) and
releases the reservation, so unused output tokens come back at once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from limits import RateLimitItemPerDay, RateLimitItemPerMinute
from limits.aio.storage import Storage
from limits.limits import RateLimitItem
from limits.storage import storage_from_string

from retort.guard.policy import Tier
from retort.moving_window import MemoryStorage

INFLIGHT_TTL_S = 3600  # a crashed replica's reservations fade after this long
UNBOUNDED = 2**52  # a limit no window reaches (and exact as a double in Redis' Lua)


@dataclass
class Budget:
    """One limit of one tier: its name (as in the headers), the window and the cap."""

    name: str
    item: RateLimitItem

    @property
    def counted(self) -> bool:
        """Token budgets use the sliding-window counter (two counters, O(1) per request
        whatever the cost); a moving window would hold one entry per token."""
        return self.name in ("input-tokens", "output-tokens", "tokens-day")

    @property
    def limit(self) -> int:
        return self.item.amount


@dataclass
class Refusal:
    """Why a request was refused, and when to try again."""

    budget: str
    retry_after_s: float


@dataclass
class Reservation:
    """What one admitted request holds, and the window figures for its response headers."""

    key_id: str
    amounts: dict[str, int]
    remaining: dict[str, int] = field(default_factory=dict)
    reset_s: dict[str, float] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
    settled: bool = False


def budgets(tier: Tier) -> list[Budget]:
    """The budgets a tier sets; a limit left out of the policy is not enforced."""
    out = []
    if tier.requests_per_minute:
        out.append(Budget("requests", RateLimitItemPerMinute(tier.requests_per_minute)))
    if tier.input_tokens_per_minute:
        out.append(Budget("input-tokens", RateLimitItemPerMinute(tier.input_tokens_per_minute)))
    if tier.output_tokens_per_minute:
        out.append(Budget("output-tokens", RateLimitItemPerMinute(tier.output_tokens_per_minute)))
    if tier.tokens_per_day:
        out.append(Budget("tokens-day", RateLimitItemPerDay(tier.tokens_per_day)))
    if tier.concurrent:
        out.append(Budget("concurrent", RateLimitItemPerMinute(tier.concurrent)))
    return out


def open_storage(redis_url: str | None) -> Storage:
    """In-memory storage, or Redis shared by every replica given the same URL."""
    if not redis_url:
        return MemoryStorage()
    uri = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
    return storage_from_string(uri, implementation="redispy")


class Limiter:
    """Reserve before the upstream call, settle after it."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def reserve(
        self, key_id: str, tier: Tier, input_tokens: int, output_tokens: int
    ) -> Reservation | Refusal:
        """Admit a request that may use these amounts, or say which budget refuses it."""
        wanted = {
            "requests": 1,
            "input-tokens": input_tokens,
            "output-tokens": output_tokens,
            "tokens-day": input_tokens + output_tokens,
            "concurrent": 1,
        }
        held = Reservation(key_id, {})
        for budget in budgets(tier):
            amount = wanted[budget.name]
            if amount > budget.limit and budget.name != "concurrent":
                await self.release(held)
                # More than the whole window: waiting cannot help.
                return Refusal(budget.name, math.inf)
            inflight = await self.storage.incr(_inflight(key_id, budget), INFLIGHT_TTL_S, amount)
            held.amounts[budget.name] = amount
            if budget.name == "concurrent":
                used, reset = 0, 1.0
            else:
                used, reset = await self._used(key_id, budget)
            if used + inflight > budget.limit:
                await self.release(held)
                return Refusal(budget.name, reset if used else 1.0)
            held.limits[budget.name] = budget.limit
            held.remaining[budget.name] = budget.limit - used - inflight
            held.reset_s[budget.name] = reset
        return held

    async def _used(self, key_id: str, budget: Budget) -> tuple[int, float]:
        """What the window holds now, and the seconds until room comes back."""
        expiry = budget.item.get_expiry()
        if budget.counted:
            before, before_ttl, now, now_ttl = await self.storage.get_sliding_window(
                _window(key_id, budget), expiry
            )
            used = math.floor(before * before_ttl / expiry + now)
            # The previous window's share decays linearly; the current one's clears at its end.
            reset = before_ttl if before else (now_ttl - expiry if now else 0.0)
            return used, max(reset, 0.001) if used else 0.0
        start, used = await self.storage.get_moving_window(
            _window(key_id, budget), budget.limit, expiry
        )
        return used, max(start + expiry - time.time(), 0.001) if used else 0.0

    async def _record(self, key: str, budget: Budget, amount: int) -> None:
        """Add ``amount`` to the window whatever it holds: usage past the reservation (an
        input estimate that fell short, an upstream that wrote past max_tokens) still counts,
        so the requests after it wait. The sliding-window counter is hit with a limit it
        cannot reach, which makes the hit unconditional on every storage; the moving window
        only ever records the one request its reservation made room for."""
        expiry = budget.item.get_expiry()
        if budget.counted:
            await self.storage.acquire_sliding_window_entry(key, UNBOUNDED, expiry, amount)
        else:
            await self.storage.acquire_entry(key, budget.limit, expiry, amount)

    async def settle(
        self, held: Reservation, tier: Tier, input_tokens: int, output_tokens: int
    ) -> None:
        """Record what the request really used, then free its reservation (once)."""
        if held.settled:
            return
        used = {
            "requests": 1,
            "input-tokens": input_tokens,
            "output-tokens": output_tokens,
            "tokens-day": input_tokens + output_tokens,
        }
        for budget in budgets(tier):
            if budget.name == "concurrent" or budget.name not in held.amounts:
                continue
            amount = used[budget.name]
            if amount > 0:
                await self._record(_window(held.key_id, budget), budget, amount)
        await self.release(held)

    async def release(self, held: Reservation) -> None:
        """Give back the in-flight reservations (also for refused requests)."""
        if held.settled:
            return
        held.settled = True
        for name, amount in held.amounts.items():
            await self.storage.incr(f"guard/inflight/{held.key_id}/{name}", INFLIGHT_TTL_S, -amount)


def _inflight(key_id: str, budget: Budget) -> str:
    return f"guard/inflight/{key_id}/{budget.name}"


def _window(key_id: str, budget: Budget) -> str:
    return f"guard/window/{key_id}/{budget.name}/{budget.limit}"
