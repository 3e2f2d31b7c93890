"""The chat models a judge run talks to: model A and B answer, the judge judges.

Each is local (transformers in this process, greedy, the model's own chat template) or served
(an OpenAI-compatible ``/v1/chat/completions``, temperature 0). Both reuse the teachers':
``LocalTeacher.generate`` for local decoding and ``TextHTTPTeacher`` with
``complete_with_retries`` for HTTP (retries with backoff and the server's retry-after).
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any, Protocol

from retort.errors import ConfigError, ModelError, TeacherError

if TYPE_CHECKING:
    from retort.teachers.http_text import TextHTTPTeacher
    from retort.teachers.local import LocalTeacher

Conversation = list[dict[str, Any]]


class ChatModel(Protocol):
    """Replies to conversations; ``name`` is what judge.json calls it."""

    name: str

    def reply(
        self, conversations: list[Conversation], max_new_tokens: int, seed: int = 0
    ) -> list[str]:
        """One reply per conversation, in order."""
        ...


class LocalChat:
    """A local model replying greedily, ``batch_size`` conversations per forward pass."""

    def __init__(self, model: LocalTeacher, name: str, batch_size: int = 8) -> None:
        self.model, self.name, self.batch_size = model, name, batch_size

    def reply(
        self, conversations: list[Conversation], max_new_tokens: int, seed: int = 0
    ) -> list[str]:
        from retort.teachers.chat import render_prompt
        from retort.teachers.protocol import Sampling

        tokenizer = self.model.tokenizer
        sampling = Sampling(max_new_tokens=max_new_tokens, seed=seed)  # temperature 0: greedy
        replies: list[str] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start : start + self.batch_size]
            prompts = [render_prompt(tokenizer, turns) for turns in chunk]
            self._check_length(prompts, max_new_tokens)
            for out in self.model.generate(prompts, sampling, top_k=0):
                replies.append(tokenizer.decode(out.completion_ids, skip_special_tokens=True))
        return replies

    def _check_length(self, prompts: list[list[int]], max_new_tokens: int) -> None:
        """A prompt past the model's positions would be judged on garbage: refuse it."""
        limit = self.model.max_positions
        longest = max(len(p) for p in prompts)
        if limit is not None and longest + max_new_tokens > limit:
            raise ModelError(
                f"{self.name}: a prompt of {longest} tokens plus {max_new_tokens} new ones "
                f"exceeds the model's {limit} positions; lower --max-answer-tokens or "
                "--max-judge-tokens, or shorten the prompts"
            )


class HTTPChat:
    """A served model, ``concurrency`` requests in flight, each retried on retryable
    failures up to ``max_retries`` times."""

    def __init__(
        self, teacher: TextHTTPTeacher, concurrency: int = 8, max_retries: int = 5
    ) -> None:
        self.teacher = teacher
        self.name = f"{teacher.base_url}#{teacher.model}"
        self.concurrency, self.max_retries = concurrency, max_retries
        self._probed = False

    def reply(
        self, conversations: list[Conversation], max_new_tokens: int, seed: int = 0
    ) -> list[str]:
        from retort.teachers.http import run_sync

        return run_sync(self._replies(conversations, max_new_tokens, seed))

    async def _replies(
        self, conversations: list[Conversation], max_new_tokens: int, seed: int
    ) -> list[str]:
        from retort.teachers.http import RequestFailed, complete_with_retries
        from retort.teachers.protocol import Sampling

        sampling = Sampling(max_new_tokens=max_new_tokens, temperature=0.0, seed=seed)
        gate = asyncio.Semaphore(self.concurrency)
        async with self.teacher.client(self.concurrency) as client:
            if not self._probed:  # unknown model, refused key: say so before any work
                await self.teacher.probe(client, top_k=0)
                self._probed = True

            async def one(turns: Conversation) -> str:
                body = self.teacher.request_body([], turns, sampling, top_k=0)
                async with gate:
                    reply, _ = await complete_with_retries(
                        self.teacher, client, body, None, self.max_retries
                    )
                return reply.generation.completion

            try:
                return list(await asyncio.gather(*(one(t) for t in conversations)))
            except RequestFailed as failure:
                raise TeacherError(
                    f"{self.name}: {failure.reason} (after {failure.attempts} attempts); what "
                    "is done is saved: run the same command again to go on"
                ) from None


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def open_chat(
    spec: str,
    flag: str,
    *,
    served_model: str | None,
    base: LocalTeacher | None,
    batch_size: int,
    concurrency: int,
    max_retries: int,
    timeout: float,
    api_key_env: str,
    loaded: dict[str, LocalTeacher],
) -> ChatModel:
    """The chat model ``spec`` names (given with ``flag``, for messages).

    Args:
        served_model: the model's name on the server, for a URL spec.
        base: the local model that ``prune:N`` prunes.
        loaded: local models loaded so far by spec; one spec given twice loads once.
    """
    from retort.models.pruning import parse_prune_spec
    from retort.teachers.local import LocalTeacher

    if is_url(spec):
        from retort.teachers.http_text import TextHTTPTeacher

        if not served_model:
            raise ConfigError(f"{flag} {spec}: name the served model with {flag}-model")
        key = os.environ.get(api_key_env)
        teacher = TextHTTPTeacher(spec, served_model, api_key=key, timeout=timeout)
        return HTTPChat(teacher, concurrency, max_retries)
    if served_model:
        raise ConfigError(f"{flag}-model {served_model}: only for a served {flag} (http(s)://…/v1)")
    if spec not in loaded:
        pruning = parse_prune_spec(spec)
        if pruning is not None:
            if base is None:
                raise ConfigError(
                    f"{flag} {spec}: pruning needs a local model to prune; give --teacher SPEC "
                    "(or a local --judge, which is pruned by default)"
                )
            from retort.models.pruning import prune

            loaded[spec] = LocalTeacher(prune(base.model, pruning), base.tokenizer)
        else:
            loaded[spec] = LocalTeacher.load(spec)
    return LocalChat(loaded[spec], spec, batch_size)
