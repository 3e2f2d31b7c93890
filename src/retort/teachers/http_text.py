"""A teacher known only by its text: an OpenAI-compatible chat API without a tokenizer.

A hosted model's tokenizer is often not public. Such a teacher is sent the chat messages
(``/v1/chat/completions``, the server renders them) and what comes back is kept as text: the
completion, its finish reason and usage, and with ``top_k`` > 0 the teacher's top-k per
position as token *strings* with their UTF-8 bytes (OpenAI's ``bytes`` field, None where the
server sends none) and logprobs. Nothing is mapped to token ids, and no tokenizer is ever
loaded: a student learns the text with its own tokenizer (``retort distill --objective sft``).

The rules of the token teacher (``http.py``) hold here too: the probe says before any work what
the server cannot do; a reply without the top-k of every returned token (``top_logprobs``
null, a null or short position, fewer positions than tokens) is refused, not retried, and
recorded as a failure; vLLM's -9999 is stored as -inf; a stop string is ``"stop_string"``. The
end token needs no special case: the text says where the answer ends, and training appends the
*student's* end-of-turn token after a ``"stop"``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import httpx

from retort.errors import ConfigError, TeacherError
from retort.teachers.http import (
    RequestFailed,
    chat_fields,
    check_probe_topk,
    complete_topk,
    finish_reason_of,
    post_for_choices,
    sampling_fields,
    served_logprob,
    served_revision,
)
from retort.teachers.protocol import Capabilities, Sampling

KIND = "text"  # the fingerprint's teacher_kind of a store this teacher writes
CHARS_PER_TOKEN = 4  # rough size of a token, for rate limits and budgets the server did not price


@dataclass
class TextGeneration:
    """One completion as text. With top-k, ``tokens[i]`` is the teacher's i-th token and
    ``topk_tokens[i]`` its top-k at that position (ranked, most likely first)."""

    completion: str
    finish_reason: str
    tokens: list[str] | None = None
    token_bytes: list[bytes | None] | None = None
    token_logprobs: list[float] | None = None
    topk_tokens: list[list[str]] | None = None
    topk_bytes: list[list[bytes | None]] | None = None
    topk_logprobs: list[list[float]] | None = None


@dataclass
class TextReply:
    """One parsed reply and what the server says it cost (0: it did not say)."""

    generation: TextGeneration
    prompt_tokens: int
    completion_tokens: int
    usage: dict[str, int | None] = field(default_factory=dict)  # as reported (None: unsaid)


class TextHTTPTeacher:
    """Talks to one model on an OpenAI-compatible chat endpoint; has no tokenizer."""

    tokenizer = None
    kind = KIND
    endpoint = "chat"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        seed_per_prompt: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.seed_per_prompt = seed_per_prompt  # as HTTPTeacher: one seed per prompt
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # OpenAI caps top_logprobs at 20, vLLM at its --max-logprobs; the probe asks the
        # server itself, so the cap here is only a sanity bound.
        self.capabilities = Capabilities(generate=True, score=False, logits=False, max_top_k=1000)
        self.revision: str | None = None

    def identity(self) -> dict[str, Any]:
        return {"model": f"{self.base_url}#{self.model}", "served_revision": self.revision}

    @property
    def decoding(self) -> dict[str, Any]:
        """The server samples, with its own defaults beyond what retort sends."""
        return {"sampler": "the server's", "sent": ["temperature", "top_p", "seed"]}

    def client(self, concurrency: int = 8) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        return httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout, limits=limits
        )

    async def probe_score(self, client: httpx.AsyncClient, top_k: int) -> None:
        raise TeacherError(
            "--mode score: scoring given text needs the teacher's tokenizer; give --tokenizer "
            "and --endpoint completions"
        )

    async def probe(self, client: httpx.AsyncClient, top_k: int) -> None:
        """Say before any work what the server cannot do: unknown model, refused key, no
        logprobs, k too large."""
        self.revision = await served_revision(client, self.base_url, self.model)
        body = self.request_body([], [{"role": "user", "content": "Hi"}], Sampling(1), top_k)
        try:
            reply = await self.complete(client, body)
        except RequestFailed as exc:
            if exc.retryable:
                return  # a busy server says nothing about what it can do
            raise TeacherError(f"{self.base_url}: the probe request failed: {exc.reason}") from None
        check_probe_topk(self.base_url, self.model, top_k, reply.generation.topk_tokens)

    def request_body(
        self, prompt_ids: list[int], turns: list[dict[str, Any]], sampling: Sampling, top_k: int
    ) -> dict[str, Any]:
        """The chat request of ``turns`` (``prompt_ids`` is always empty here)."""
        seed = sampling.seed
        if self.seed_per_prompt:
            from retort.teachers.decoding import derive_seed  # decoding imports torch

            seed = derive_seed(sampling.seed, turns)
        return sampling_fields(self.model, sampling, seed) | chat_fields(turns, top_k)

    async def complete(
        self, client: httpx.AsyncClient, body: dict[str, Any], score_from: int | None = None
    ) -> TextReply:
        """One request; raises ``RequestFailed`` with what went wrong and whether to retry."""
        payload, choices = await post_for_choices(client, "/chat/completions", body)
        try:
            return self._parse(payload, choices[0], body.get("top_logprobs") or 0)
        except (KeyError, TypeError, ValueError) as exc:
            raise RequestFailed(f"malformed response ({exc})", retryable=True) from None

    def unfit(self, reply: TextReply, top_k: int) -> str | None:
        """Why ``reply`` must not become a row; the parser already refused missing top-k."""
        return None

    def _parse(self, payload: dict[str, Any], choice: dict[str, Any], k: int) -> TextReply:
        generation = TextGeneration(
            completion=choice["message"]["content"] or "",
            finish_reason=finish_reason_of(choice),
        )
        if k:
            logprobs = choice.get("logprobs")
            if not logprobs:
                raise RequestFailed("logprobs missing from the response", retryable=True)
            entries = logprobs.get("content") or []
            tops = [
                None
                if e.get("top_logprobs") is None
                else [(t["token"], t.get("bytes"), t["logprob"]) for t in e["top_logprobs"]]
                for e in entries
            ]
            generation.tokens = [e["token"] for e in entries]
            generation.token_bytes = [_raw(e.get("bytes")) for e in entries]
            generation.token_logprobs = [served_logprob(e["logprob"]) for e in entries]
            generation.topk_tokens, generation.topk_bytes, generation.topk_logprobs = [], [], []
            for position in complete_topk(tops, len(entries), k):
                ranked = sorted(position, key=lambda t: -t[2])[:k]
                generation.topk_tokens.append([token for token, _, _ in ranked])
                generation.topk_bytes.append([_raw(raw) for _, raw, _ in ranked])
                generation.topk_logprobs.append([served_logprob(lp) for _, _, lp in ranked])
        reported = payload.get("usage") or {}
        usage = {
            name: _count(reported.get(name)) for name in ("prompt_tokens", "completion_tokens")
        }
        # Unreported, the completion's size is its tokens, else estimated from its text.
        written = len(generation.tokens or []) or _estimate(generation.completion)
        return TextReply(
            generation, usage["prompt_tokens"] or 0, usage["completion_tokens"] or written, usage
        )


def estimated_tokens(turns: list[dict[str, Any]]) -> int:
    """A prompt's size in tokens when no tokenizer says it: about one per four characters
    (what rate limits and budgets charge where the server reports no count)."""
    return max(1, _estimate(json.dumps(turns, ensure_ascii=False)))


def _estimate(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def connect_text_teacher(
    url: str, model: str | None, *, api_key_env: str, timeout: float
) -> TextHTTPTeacher:
    """A text teacher from user settings: the served model's name is required; the key is read
    from ``api_key_env``."""
    if not model:
        raise ConfigError(f"--teacher {url}: name the served model with --teacher-model")
    key = os.environ.get(api_key_env)
    return TextHTTPTeacher(url, model, api_key=key, timeout=timeout)


def is_text_teacher(teacher: Any) -> bool:
    return getattr(teacher, "kind", None) == KIND


def _count(value: Any) -> int | None:
    return None if value is None else int(value)


def _raw(value: Any) -> bytes | None:
    """OpenAI's ``bytes`` (a list of ints) as bytes; None when the server sent none."""
    return None if value is None else bytes(value)
