"""Batching across concurrent clients: requests that arrive together run as one batch.

One worker owns the model. It takes the first waiting job, waits a few milliseconds for more,
groups the jobs by sampling settings (a batch shares temperature and top-p), and runs each group
as one ``generate`` call in a thread, so the event loop keeps accepting requests. Every row
samples with its own generator (``teachers/decoding.py``), seeded from its job: a seeded job
writes the same text whatever else shares its batch, and an unseeded one draws a fresh seed.
Results are cut to each job's own token limit and stop strings. A batch that fails fails its
own jobs only; the worker goes on with the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from retort.teachers.local import LocalTeacher
from retort.teachers.protocol import Generation, Sampling, Scored


@dataclass
class Job:
    """One completion to write."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None  # None: a fresh seed from the OS when the job runs
    top_k: int  # logprobs per position to keep (0: none)
    stops: list[str] = field(default_factory=list)
    on_token: Callable[[int], None] | None = None  # streaming; called from the worker thread
    future: asyncio.Future | None = None
    watermark: bool = True  # written with the teacher's watermark key, when it has one

    def group_key(self) -> tuple[Any, ...]:
        # Seeds need not match: each row has its own generator. A batch is watermarked or not.
        sampling = ("greedy",) if self.temperature == 0 else (self.temperature, self.top_p)
        return (*sampling, self.watermark)


@dataclass
class EngineStats:
    jobs: int = 0
    batches: int = 0
    largest_batch: int = 0


class BatchingEngine:
    """Runs jobs on a ``LocalTeacher`` in batches of up to ``max_batch``."""

    def __init__(self, teacher: LocalTeacher, max_batch: int = 8, wait_ms: float = 10) -> None:
        self.teacher = teacher
        self.plain = teacher.watermarked(None) if teacher.watermark is not None else teacher
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000
        self.stats = EngineStats()
        self._queue: asyncio.Queue[Job] | None = None
        self._worker: asyncio.Task | None = None
        self._model_lock = asyncio.Lock()  # generate and score never overlap

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def generate(self, job: Job) -> Generation:
        """Queue ``job`` and wait for its completion."""
        job.future = asyncio.get_running_loop().create_future()
        await self._queue.put(job)
        return await job.future

    async def score(self, sequences: list[list[int]], top_k: int) -> list[Scored]:
        """Teacher-forced logprobs (vLLM's ``prompt_logprobs``), between batches."""
        async with self._model_lock:
            return await asyncio.to_thread(self.teacher.score, sequences, top_k)

    async def _run(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self.wait_s
            while len(jobs) < self.max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            groups: dict[tuple[Any, ...], list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.group_key(), []).append(job)
            for group in groups.values():
                await self._run_group(group)

    async def _run_group(self, jobs: list[Job]) -> None:
        first = jobs[0]
        sampling = Sampling(
            max_new_tokens=max(j.max_tokens for j in jobs),
            temperature=first.temperature,
            top_p=first.top_p,
        )
        top_k = max(j.top_k for j in jobs)
        seeds = [secrets.randbits(63) if j.seed is None else j.seed for j in jobs]

        def on_token(row: int, token: int) -> None:
            if jobs[row].on_token is not None:
                jobs[row].on_token(token)

        streaming = any(j.on_token for j in jobs)
        try:
            async with self._model_lock:
                outputs = await asyncio.to_thread(
                    (self.teacher if first.watermark else self.plain).generate,
                    [j.prompt_ids for j in jobs],
                    sampling,
                    top_k,
                    on_token if streaming else None,
                    seeds=seeds,
                )
            fitted = [self._fit(job, out) for job, out in zip(jobs, outputs, strict=True)]
        except Exception as exc:  # one bad batch fails its own requests, not the server
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        self.stats.jobs += len(jobs)
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))
        for job, out in zip(jobs, fitted, strict=True):
            if not job.future.done():
                job.future.set_result(out)

    def _fit(self, job: Job, out: Generation) -> Generation:
        """Cut a batch's output to this job's token limit, stop strings and top-k."""
        length, finish = len(out.completion_ids), out.finish_reason
        if length > job.max_tokens:
            length, finish = job.max_tokens, "length"
        if job.stops:
            cut = stop_cut(self.teacher.tokenizer, out.completion_ids[:length], job.stops)
            if cut is not None:
                length, finish = cut, "stop"
        return Generation(
            completion_ids=out.completion_ids[:length],
            finish_reason=finish,
            topk_ids=[row[: job.top_k] for row in out.topk_ids[:length]],
            topk_logprobs=[row[: job.top_k] for row in out.topk_logprobs[:length]],
            token_logprobs=out.token_logprobs[:length],
        )


def stop_cut(tokenizer: Any, ids: list[int], stops: list[str]) -> int | None:
    """Number of tokens to keep so the text ends before the first stop string, or None."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    if not found:
        return None
    end = min(found)
    keep = 0
    for n in range(1, len(ids) + 1):
        if len(tokenizer.decode(ids[:n], skip_special_tokens=True)) > end:
            break
        keep = n
    return keep
