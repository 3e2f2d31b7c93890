"""On-policy distillation against a teacher behind an HTTP API.

The server cannot hand over its full distribution, so the student's samples are scored through
score mode (vLLM's ``prompt_logprobs``; ``retort serve`` has it too): the teacher's top-k at
every sampled position. The KD term is then the top-k divergence with a tail bucket, as for the
``topk`` objective, and batches that are not sampled use the store's top-k. The teacher costs
the training machine no memory.
"""

from __future__ import annotations

import asyncio
from typing import Any

from retort.config import DistillConfig
from retort.errors import TeacherError
from retort.teachers.http import (
    HTTPTeacher,
    RequestFailed,
    complete_with_retries,
    connect_teacher,
    run_sync,
)


class RemoteScorer:
    """Scores sequences with an HTTP teacher, ``concurrency`` requests at a time."""

    def __init__(self, teacher: HTTPTeacher, top_k: int, concurrency: int, max_retries: int):
        self.teacher, self.top_k = teacher, top_k
        self.concurrency, self.max_retries = concurrency, max_retries

    @classmethod
    def connect(cls, config: DistillConfig, top_k: int) -> RemoteScorer:
        """Build the HTTP teacher from the config and check, before training, that the server
        scores given tokens with k logprobs per position."""
        teacher = connect_teacher(
            config.teacher,
            config.teacher_model,
            config.tokenizer,
            api_key_env=config.api_key_env,
            timeout=config.timeout,
        )
        scorer = cls(teacher, top_k, config.concurrency, config.max_retries)
        run_sync(scorer._probe())
        return scorer

    async def _probe(self) -> None:
        async with self.teacher.client(1) as client:
            await self.teacher.probe(client, self.top_k)
            await self.teacher.probe_score(client, self.top_k)

    def score(self, sequences: list[list[int]], starts: list[int]) -> list[Any]:
        """For each sequence, the teacher's ``Generation`` of positions ``start`` on: top-k ids
        and logprobs per position and the logprob of each actual token."""
        return run_sync(self._score_all(sequences, starts))

    async def _score_all(self, sequences: list[list[int]], starts: list[int]) -> list[Any]:
        gate = asyncio.Semaphore(self.concurrency)
        async with self.teacher.client(self.concurrency) as client:

            async def one(sequence: list[int], start: int) -> Any:
                body = self.teacher.score_body(sequence, self.top_k)
                async with gate:
                    try:
                        reply, _ = await complete_with_retries(
                            self.teacher, client, body, start, self.max_retries
                        )
                    except RequestFailed as failure:
                        raise TeacherError(
                            f"{self.teacher.base_url}: scoring a student sample failed after "
                            f"{failure.attempts} attempts ({failure.reason}); fix the server "
                            "and rerun with --resume"
                        ) from None
                return reply.generation

            return await asyncio.gather(
                *(one(s, t) for s, t in zip(sequences, starts, strict=True))
            )
