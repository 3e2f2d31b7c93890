"""Capture from an HTTP teacher: bounded concurrency, client-side rate limits, retries with
backoff that honour the server's advice, a token/cost budget, and every prompt ending as a row
or as a recorded failure.

Rate limits use the ``limits`` library (moving windows over requests and tokens per minute).
A retry waits what the server said (``retry-after-ms``, ``Retry-After``) or an exponential
backoff with jitter; ``x-should-retry`` overrides the status-based decision. The budget stops
new requests once spent; prompts not attempted stay missing and the next run takes them.

A reply without the teacher's top-k for every token (``top_logprobs: null``, a null or short
position) is refused by the parser and recorded as a failure with its reason, like a reply whose
tokens map to no id: a row is stored only when each completion token has its top-k (the one
exception, an end token the server gave no logprobs for, is an explicit empty position).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from limits import RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter

from retort.capture.store import ShardBuffer, Store
from retort.moving_window import MemoryStorage
from retort.progress import Progress
from retort.teachers.http import HTTPTeacher, RequestFailed, complete_with_retries
from retort.teachers.http_text import TextHTTPTeacher, estimated_tokens
from retort.teachers.protocol import Sampling


@dataclass
class HTTPSettings:
    """Client-side limits of one capture."""

    concurrency: int = 8
    rpm: int | None = None
    tpm: int | None = None
    max_retries: int = 5
    max_teacher_tokens: int | None = None
    price_per_1k_in: float = 0.0
    price_per_1k_out: float = 0.0
    max_cost: float | None = None


@dataclass
class HTTPOutcome:
    """What the capture did: rows go to the store as it runs; the rest is accounted here."""

    written: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    not_attempted: int = 0  # left for the next run by the budget

    def cost(self, settings: HTTPSettings) -> float:
        return (
            self.prompt_tokens * settings.price_per_1k_in
            + self.completion_tokens * settings.price_per_1k_out
        ) / 1000


async def probe(teacher: HTTPTeacher | TextHTTPTeacher, top_k: int, score: bool = False) -> None:
    """Ask the server what it can do (model listed, logprobs, k, prompt_logprobs for score
    mode) before a store or a progress bar exists: a dead or unfit server leaves nothing."""
    async with teacher.client(1) as client:
        await (teacher.probe_score if score else teacher.probe)(client, top_k)


async def capture(
    teacher: HTTPTeacher | TextHTTPTeacher,
    work: list[tuple[Any, list[int], list[dict[str, Any]]]],
    sampling: Sampling,
    top_k: int,
    store: Store,
    settings: HTTPSettings,
    make_row: Any,
    rows_per_shard: int,
    progress: Progress,
    score: bool = False,
) -> HTTPOutcome:
    """Run ``work`` (record, prompt ids, chat turns, completion ids) through the teacher into
    ``store``; with ``score``, the teacher scores each given completion instead of writing one.
    ``make_row(record, prompt_ids, turns, reply)`` builds a row. A text teacher's work has no
    prompt ids (``[]``). The teacher was probed first (``probe``)."""
    outcome = HTTPOutcome()
    shards = ShardBuffer(store, rows_per_shard)
    limiter = MovingWindowRateLimiter(MemoryStorage())
    per_request = RateLimitItemPerMinute(settings.rpm) if settings.rpm else None
    per_token = RateLimitItemPerMinute(settings.tpm) if settings.tpm else None
    gate = asyncio.Semaphore(settings.concurrency)

    def spent() -> bool:
        used = outcome.prompt_tokens + outcome.completion_tokens
        if settings.max_teacher_tokens is not None and used >= settings.max_teacher_tokens:
            return True
        return settings.max_cost is not None and outcome.cost(settings) >= settings.max_cost

    async def wait_for_limits(cost: int) -> None:
        for item, amount in ((per_request, 1), (per_token, cost)):
            if item is None:
                continue
            while not await limiter.hit(item, "teacher", cost=min(amount, item.amount)):
                stats = await limiter.get_window_stats(item, "teacher")
                delay = max(stats.reset_time - time.time(), 0.05)  # reset_time is wall-clock
                await asyncio.sleep(min(delay, 1.0))

    async def one(
        client: Any, record: Any, prompt_ids: list[int], turns: list[Any], given: list[int]
    ) -> None:
        async with gate:
            if spent():
                outcome.not_attempted += 1
                return
            if score:
                body = teacher.score_body(prompt_ids + given, top_k)
                score_from = len(prompt_ids)
            else:
                body = teacher.request_body(prompt_ids, turns, sampling, top_k)
                score_from = None
            # A text teacher's prompt has no ids here: its size is estimated from its text.
            prompt_size = len(prompt_ids) or estimated_tokens(turns)
            cost = prompt_size + sampling.max_new_tokens

            def retried() -> None:
                outcome.retries += 1

            try:
                reply, attempts = await complete_with_retries(
                    teacher,
                    client,
                    body,
                    score_from,
                    settings.max_retries,
                    before_attempt=lambda: wait_for_limits(cost),
                    on_retry=retried,
                )
            except RequestFailed as failure:
                outcome.failures.append(
                    {"id": record.id, "reason": failure.reason, "attempts": failure.attempts}
                )
                progress.advance(1)
                return
            outcome.prompt_tokens += reply.prompt_tokens or prompt_size
            outcome.completion_tokens += reply.completion_tokens
            reason = teacher.unfit(reply, top_k)
            if reason is not None:
                outcome.failures.append({"id": record.id, "reason": reason, "attempts": attempts})
            else:
                shards.add(make_row(record, prompt_ids, turns, reply))
            priced = settings.price_per_1k_in or settings.price_per_1k_out
            spend = {"cost": outcome.cost(settings)} if priced else {}
            progress.advance(1, tokens=reply.completion_tokens, **spend)

    try:
        async with teacher.client(settings.concurrency) as client:
            await asyncio.gather(*(one(client, *item) for item in work))
    finally:
        shards.flush()  # interrupted or not, every finished row is kept
        outcome.written = shards.written
    return outcome
