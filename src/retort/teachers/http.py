"""A teacher behind an OpenAI-compatible HTTP API (OpenAI, vLLM, SGLang, ``retort serve``).

Prompts are rendered locally with the declared tokenizer's chat template and sent as token ids
to ``/v1/completions`` (``endpoint="completions"``: exact, what vLLM and ``retort serve``
accept), or sent as messages to ``/v1/chat/completions`` (``endpoint="chat"``: any OpenAI-style
server, which renders them itself). Returned tokens are mapped back to the declared tokenizer's
ids: exactly through vLLM's ``return_tokens_as_token_ids`` when the server honours it, else
through each token's bytes; a position that maps to no id is reported, never guessed.

The end token. Servers drop it from ``text`` (special tokens are skipped) and OpenAI from
``logprobs.content`` too, so a reply that finished with ``"stop"`` gets the teacher's
end-of-turn token appended unless it already ends with one: local and HTTP capture of one prompt
store the same ids, and students learn to stop. A stop caused by a stop *string* is not the
model ending its turn: the text is cut before the string, so no end token is added and the row
says ``finish_reason="stop_string"`` (vLLM says which it was in ``stop_reason``: a string, a
stop token id, or None for the end token; retort sends no stop strings, so a plain ``"stop"``
means the end token). An appended end token has no
top-k (the server reported none): its position holds an empty list, which training KD-masks
while cross-entropy still teaches the stop.

Missing teacher data. With logprobs requested, every returned token must come with its top-k
(at least k alternatives): a reply with ``top_logprobs: null``, a null or short position, or
fewer positions than tokens is refused (``RequestFailed``, not retried) and the capture records
it as a failure, never as a row whose gaps training would fill in. vLLM writes a logprob of
``-inf`` as -9999; both are stored as ``-inf`` (zero probability).
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from retort.errors import ConfigError, RetortError, TeacherError
from retort.models.loading import load_tokenizer, resolve
from retort.teachers.chat import end_of_turn_id
from retort.teachers.protocol import Capabilities, Generation, Sampling
from retort.teachers.tokens import TokenText

T = TypeVar("T")
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 60.0
ZERO_LOGPROB = -9999.0  # vLLM's JSON stand-in for a logprob of -inf


class RequestFailed(Exception):
    """One request failed; ``retryable`` says whether trying again may help. ``attempts`` is
    filled in by ``complete_with_retries`` when it gives up."""

    def __init__(self, reason: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retryable, self.retry_after = reason, retryable, retry_after
        self.attempts = 1


@dataclass
class HTTPReply:
    """One parsed completion and what it cost."""

    generation: Generation
    prompt_tokens: int
    completion_tokens: int
    unmapped: int  # positions whose token could not be mapped to an id


def sampling_fields(model: str, sampling: Sampling, seed: int | None) -> dict[str, Any]:
    """What every generation request sends: the model and how to sample."""
    return {
        "model": model,
        "max_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "seed": seed,
    }


def chat_fields(turns: list[dict[str, Any]], top_k: int) -> dict[str, Any]:
    """A chat request's messages, and its top-k logprobs when asked for."""
    fields: dict[str, Any] = {"messages": turns}
    if top_k:
        fields |= {"logprobs": True, "top_logprobs": top_k}
    return fields


class HTTPTeacher:
    """Talks to one model on an OpenAI-compatible server."""

    def __init__(
        self,
        base_url: str,
        model: str,
        tokenizer: Any,
        *,
        api_key: str | None = None,
        endpoint: str = "completions",
        timeout: float = 120.0,
        source_spec: str | None = None,
        seed_per_prompt: bool = True,
    ) -> None:
        if endpoint not in {"completions", "chat"}:
            raise TeacherError(f"--endpoint {endpoint}: use completions or chat")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.tokenizer = tokenizer
        self.endpoint = endpoint
        self.timeout = timeout
        # Each request sends a seed derived from the run's seed and its prompt, as a local
        # capture seeds each row: different prompts draw independent samples (one shared
        # random stream makes a flat model write one text for all, and the provenance audit
        # pools samples), and a resumed or repeated request draws the same one. False sends
        # the run's seed itself with every request.
        self.seed_per_prompt = seed_per_prompt
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.tokens = TokenText(tokenizer)
        self.end_token_id = end_of_turn_id(tokenizer)
        self.end_ids = set(tokenizer.all_special_ids)  # a reply ending in one has its end token
        # OpenAI caps top_logprobs at 20, vLLM at its --max-logprobs; the probe asks the
        # server itself before any work, so the declared cap here is only a sanity bound.
        self.capabilities = Capabilities(generate=True, score=False, logits=False, max_top_k=1000)
        self.token_ids_supported = False
        self.revision: str | None = None

    def identity(self) -> dict[str, Any]:
        return {"model": f"{self.base_url}#{self.model}", "served_revision": self.revision}

    @property
    def decoding(self) -> dict[str, Any]:
        """The fingerprint's decoding entry: the server samples, with its own defaults beyond
        what retort sends (vLLM applies a checkpoint's generation_config.json unless started
        with ``--generation-config vllm``), so retort's exact-decode claim does not hold here."""
        return {"sampler": "the server's", "sent": ["temperature", "top_p", "seed"]}

    def client(self, concurrency: int = 8) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        return httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout, limits=limits
        )

    async def probe_score(self, client: httpx.AsyncClient, top_k: int) -> None:
        """Score mode needs vLLM's ``prompt_logprobs``: refuse up front where it is missing."""
        if self.endpoint != "completions":
            raise TeacherError(
                "--mode score needs --endpoint completions (token ids in, scores out)"
            )
        sequence = self.tokenizer("Hi there", add_special_tokens=False)["input_ids"]
        try:
            await self.complete(client, self.score_body(sequence, top_k), score_from=1)
        except RequestFailed as exc:
            if exc.retryable and "prompt_logprobs missing" not in exc.reason:
                return
            raise TeacherError(
                f"{self.base_url}: no teacher-forced scores from this server ({exc.reason}); "
                "score mode needs vLLM's prompt_logprobs extension"
            ) from None

    async def probe(self, client: httpx.AsyncClient, top_k: int) -> None:
        """Say before any work what the server cannot do: unknown model, no logprobs, k too
        large. Also learns whether tokens can come back as ids."""
        self.revision = await served_revision(client, self.base_url, self.model)
        prompt_ids = self.tokenizer("Hi", add_special_tokens=False)["input_ids"]
        body = self.request_body(
            prompt_ids, [{"role": "user", "content": "Hi"}], Sampling(1), top_k
        )
        try:
            reply = await self.complete(client, body)
        except RequestFailed as exc:
            if exc.retryable:
                return  # a busy server says nothing about what it can do
            raise TeacherError(f"{self.base_url}: the probe request failed: {exc.reason}") from None
        check_probe_topk(self.base_url, self.model, top_k, reply.generation.topk_ids)

    def request_body(
        self, prompt_ids: list[int], turns: list[dict[str, Any]], sampling: Sampling, top_k: int
    ) -> dict[str, Any]:
        seed = sampling.seed
        if self.seed_per_prompt:
            from retort.teachers.decoding import derive_seed  # decoding imports torch

            seed = derive_seed(sampling.seed, prompt_ids)
        body = sampling_fields(self.model, sampling, seed)
        body["return_tokens_as_token_ids"] = True  # vLLM / retort serve; others ignore it
        if self.endpoint == "completions":
            body["prompt"] = prompt_ids
            body["logprobs"] = top_k if top_k else None
        else:
            body |= chat_fields(turns, top_k)
        return body

    def score_body(self, sequence: list[int], top_k: int) -> dict[str, Any]:
        """Teacher-forced logprobs of ``sequence`` through vLLM's ``prompt_logprobs``."""
        return {
            "model": self.model,
            "prompt": sequence,
            "max_tokens": 1,
            "temperature": 0,
            "prompt_logprobs": top_k,
            "return_tokens_as_token_ids": True,
        }

    async def complete(
        self, client: httpx.AsyncClient, body: dict[str, Any], score_from: int | None = None
    ) -> HTTPReply:
        """One request; raises ``RequestFailed`` with what went wrong and whether to retry.

        With ``score_from``, the reply is the teacher-forced scoring of ``body["prompt"]`` from
        that position on (a score request), not the completion."""
        path = "/completions" if self.endpoint == "completions" else "/chat/completions"
        payload, choices = await post_for_choices(client, path, body)
        want_logprobs = bool(body.get("logprobs"))
        try:
            if score_from is not None:
                return self._parse_scores(payload, choices[0], body, score_from)
            return self._parse(payload, choices[0], want_logprobs, body)
        except (KeyError, TypeError, ValueError) as exc:
            raise RequestFailed(f"malformed response ({exc})", retryable=True) from None

    def _parse(
        self,
        payload: dict[str, Any],
        choice: dict[str, Any],
        want_logprobs: bool,
        body: dict[str, Any],
    ) -> HTTPReply:
        logprobs = choice.get("logprobs")
        if want_logprobs and not logprobs:
            raise RequestFailed("logprobs missing from the response", retryable=True)
        tops: list[list[tuple[str, Any, float]] | None] | None
        if self.endpoint == "chat":
            text = choice["message"]["content"] or ""
            entries = (logprobs or {}).get("content") or []
            tokens = [e["token"] for e in entries]
            token_bytes = [e.get("bytes") for e in entries]
            token_lps = [e["logprob"] for e in entries]
            tops = [
                None
                if e.get("top_logprobs") is None
                else [(t["token"], t.get("bytes"), t["logprob"]) for t in e["top_logprobs"]]
                for e in entries
            ]
        else:
            text = choice["text"]
            tokens = list((logprobs or {}).get("tokens") or [])
            token_bytes = [None] * len(tokens)
            token_lps = list((logprobs or {}).get("token_logprobs") or [])
            listed = (logprobs or {}).get("top_logprobs")
            tops = (
                None
                if listed is None
                else [
                    None if top is None else [(t, None, lp) for t, lp in top.items()]
                    for top in listed
                ]
            )
        unmapped = 0
        if tokens:
            ids = [self.token_id(t, b) for t, b in zip(tokens, token_bytes, strict=True)]
        else:  # text only: the declared tokenizer's reading of the text
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        unmapped += sum(i is None for i in ids)
        finish_reason = finish_reason_of(choice)
        generation = Generation(
            completion_ids=[i if i is not None else -1 for i in ids],
            finish_reason=finish_reason,
            token_logprobs=[float(lp) for lp in token_lps],
        )
        if want_logprobs:
            k = body.get("top_logprobs") or body.get("logprobs")
            for position in complete_topk(tops, len(ids), k):
                ranked = sorted(position, key=lambda t: -t[2])[:k]
                mapped = [(self.token_id(t, b), lp) for t, b, lp in ranked]
                unmapped += sum(i is None for i, _ in mapped)
                generation.topk_ids.append([i if i is not None else -1 for i, _ in mapped])
                generation.topk_logprobs.append([served_logprob(lp) for _, lp in mapped])
        end = self._missing_end_token(generation.completion_ids, finish_reason, choice, body)
        if end is not None:
            generation.completion_ids.append(end)
            if want_logprobs:  # the server reported no distribution for it: none is stored
                generation.topk_ids.append([])
                generation.topk_logprobs.append([])
        usage = payload.get("usage") or {}
        return HTTPReply(
            generation,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or len(ids)),
            unmapped=unmapped,
        )

    def unfit(self, reply: HTTPReply, top_k: int) -> str | None:
        """Why ``reply`` must not become a row (tokens without an id, top-k that does not
        cover every token), or None."""
        out = reply.generation
        if reply.unmapped:
            return f"{reply.unmapped} returned tokens have no id in the declared tokenizer"
        if top_k and len(out.topk_ids) != len(out.completion_ids):
            return (
                f"top-k for {len(out.topk_ids)} of {len(out.completion_ids)} completion "
                "tokens; the row would train on made-up teacher data"
            )
        return None

    def _missing_end_token(
        self, ids: list[int], finish_reason: str, choice: dict[str, Any], body: dict[str, Any]
    ) -> int | None:
        """The end token a ``"stop"`` reply left out of its tokens, or None (see the module
        docstring for why a stop string gets none)."""
        if finish_reason != "stop":
            return None
        stop_reason = choice.get("stop_reason")  # vLLM: str stop string | int stop token | None
        if isinstance(stop_reason, str):
            return None
        if isinstance(stop_reason, int) and not isinstance(stop_reason, bool):
            end = stop_reason
        elif body.get("stop"):
            return None  # a stop string may have ended it and the server does not say
        else:
            end = self.end_token_id
        if end is None or (ids and (ids[-1] == end or ids[-1] in self.end_ids)):
            return None
        return end

    def _parse_scores(
        self, payload: dict[str, Any], choice: dict[str, Any], body: dict[str, Any], start: int
    ) -> HTTPReply:
        entries = choice.get("prompt_logprobs") or payload.get("prompt_logprobs")
        if not entries:
            raise RequestFailed("prompt_logprobs missing from the response", retryable=True)
        sequence, k = body["prompt"], body["prompt_logprobs"]
        generation = Generation(completion_ids=list(sequence[start:]), finish_reason="scored")
        for position in range(start, len(sequence)):
            entry = {int(key): value for key, value in entries[position].items()}
            actual = entry[sequence[position]]
            generation.token_logprobs.append(float(actual["logprob"]))
            ranked = sorted(entry.items(), key=lambda item: item[1]["rank"])[:k]
            if k and len(ranked) < k:
                raise RequestFailed(
                    f"position {position}: {len(ranked)} top-k logprobs of the {k} asked for",
                    retryable=False,
                )
            if k:
                generation.topk_ids.append([token for token, _ in ranked])
                generation.topk_logprobs.append([served_logprob(v["logprob"]) for _, v in ranked])
        usage = payload.get("usage") or {}
        return HTTPReply(generation, int(usage.get("prompt_tokens") or len(sequence)), 0, 0)

    def token_id(self, token: str, raw: list[int] | None) -> int | None:
        """The declared tokenizer's id of a returned token, or None when it has none."""
        if token.startswith("token_id:"):
            self.token_ids_supported = True
            return int(token.removeprefix("token_id:"))
        table = _bytes_to_id(self.tokens)
        key = bytes(raw) if raw is not None else token.encode()
        return table.get(key)


async def served_revision(client: httpx.AsyncClient, base_url: str, model: str) -> str | None:
    """Check ``/models`` before any work: the server answers, takes the key and serves
    ``model`` (when it lists models at all); returns the revision it names for it, if any."""
    try:
        listed = await client.get("/models")
    except httpx.HTTPError as exc:
        raise TeacherError(f"{base_url}: cannot reach the server ({exc})") from None
    if listed.status_code in (401, 403):
        raise TeacherError(f"{base_url}: refused the API key ({listed.status_code})")
    entries = _json(listed).get("data", []) if listed.is_success else []
    names = [m.get("id") for m in entries]
    if names and model not in names:
        raise TeacherError(f"--teacher-model {model}: the server serves {', '.join(names)}")
    for entry in entries:
        if entry.get("id") == model:
            return entry.get("root") or entry.get("revision")
    return None


async def post_for_choices(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> tuple[dict[str, Any], list[Any]]:
    """POST ``body`` to ``path``; the reply's JSON and its non-empty ``choices``, else
    ``RequestFailed`` saying what went wrong and whether to retry."""
    try:
        response = await client.post(path, json=body)
    except httpx.TimeoutException:
        raise RequestFailed("timed out", retryable=True) from None
    except httpx.HTTPError as exc:  # connection refused / reset, broken body
        raise RequestFailed(f"connection error: {type(exc).__name__}", True) from None
    if response.status_code != 200:
        raise _status_failure(response)
    payload = _json(response)
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not choices:
        raise RequestFailed("200 with no choices", retryable=True)
    return payload, choices


def finish_reason_of(choice: dict[str, Any]) -> str:
    """A choice's finish reason; ``"stop_string"`` where vLLM says a stop *string* ended it
    (the text is cut before the string: the turn did not end)."""
    finish_reason = choice.get("finish_reason") or "length"  # unsaid: maybe not the end
    if finish_reason == "stop" and isinstance(choice.get("stop_reason"), str):
        finish_reason = "stop_string"
    return finish_reason


def complete_topk(
    tops: list[list[tuple[str, Any, float]] | None] | None, tokens: int, k: int
) -> list[list[tuple[str, Any, float]]]:
    """The per-token top-k of a reply, refused unless every token has at least ``k``."""
    if tops is None:
        raise RequestFailed("no top-k logprobs in the reply (top_logprobs is null)", False)
    if len(tops) != tokens:
        raise RequestFailed(f"top-k logprobs for {len(tops)} of {tokens} returned tokens", False)
    for position, top in enumerate(tops):
        if top is None:
            raise RequestFailed(f"position {position}: top_logprobs is null (no top-k)", False)
        if len(top) < k:
            raise RequestFailed(
                f"position {position}: {len(top)} top-k logprobs of the {k} asked for", False
            )
    return tops  # type: ignore[return-value]


def served_logprob(value: Any) -> float:
    """A returned logprob as a float; vLLM's -9999 (its JSON for -inf) becomes -inf."""
    value = float(value)
    return float("-inf") if value <= ZERO_LOGPROB else value


@functools.cache
def _bytes_to_id(tokens: TokenText) -> dict[bytes, int]:
    """Each vocabulary entry's bytes → its id (the lowest id where two share bytes)."""
    table: dict[bytes, int] = {}
    for token_id in sorted(tokens.tokenizer.get_vocab().values(), reverse=True):
        table[bytes(tokens(token_id)[1])] = token_id
    return table


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise RequestFailed("malformed JSON in the response", retryable=True) from None


def _status_failure(response: httpx.Response) -> RequestFailed:
    """Classify an HTTP error and read the server's retry advice."""
    status = response.status_code
    retry_after = _retry_after(response.headers)
    should = response.headers.get("x-should-retry")
    retryable = status in (408, 409, 429) or status >= 500
    if should is not None:
        retryable = should.lower() == "true"
    try:
        message = response.json().get("error", {}).get("message", "")
    except (ValueError, AttributeError):
        message = response.text[:200]
    return RequestFailed(f"HTTP {status}: {message}".strip(": "), retryable, retry_after)


def _retry_after(headers: httpx.Headers) -> float | None:
    if "retry-after-ms" in headers:
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            return None
    if "retry-after" in headers:
        try:
            return float(headers["retry-after"])
        except ValueError:
            return None  # an HTTP date: fall back to our own backoff
    return None


async def complete_with_retries(
    teacher: HTTPTeacher,
    client: httpx.AsyncClient,
    body: dict[str, Any],
    score_from: int | None,
    max_retries: int,
    before_attempt: Callable[[], Awaitable[None]] | None = None,
    on_retry: Callable[[], None] | None = None,
) -> tuple[HTTPReply, int]:
    """``teacher.complete`` retried on retryable failures, waiting what the server asked
    (retry-after) or an exponential backoff with jitter; returns the reply and the attempts.
    Raises the last ``RequestFailed`` (with ``attempts``) when it gives up."""
    attempts = 0
    while True:
        attempts += 1
        if before_attempt is not None:
            await before_attempt()  # e.g. client-side rate limits
        try:
            return await teacher.complete(client, body, score_from), attempts
        except RequestFailed as failure:
            if not failure.retryable or attempts > max_retries:
                failure.attempts = attempts
                raise
            if on_retry is not None:
                on_retry()
            backoff = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempts - 1))
            await asyncio.sleep(failure.retry_after or backoff * random.uniform(0.5, 1))


def run_sync(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to completion from synchronous code, also when the caller is already inside
    an event loop (a notebook): there it runs on a fresh loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result()


def connect_teacher(
    url: str,
    model: str | None,
    tokenizer_spec: str | None,
    *,
    api_key_env: str,
    timeout: float,
    endpoint: str = "completions",
) -> HTTPTeacher:
    """An HTTP teacher from user settings: the served model's name is required; its tokenizer
    (a spec) defaults to the model name; the key is read from ``api_key_env``."""
    if not model:
        raise ConfigError(f"--teacher {url}: name the served model with --teacher-model")
    spec = tokenizer_spec or model
    try:
        tokenizer = load_tokenizer(resolve(spec))
    except RetortError as exc:
        raise ConfigError(
            f"--tokenizer {spec}: {exc}; give the teacher's tokenizer (folder, hub id or alias) "
            "with --tokenizer"
        ) from None
    key = os.environ.get(api_key_env)
    return HTTPTeacher(url, model, tokenizer, api_key=key, endpoint=endpoint, timeout=timeout)


def check_probe_topk(base_url: str, model: str, top_k: int, tops: list[list[Any]] | None) -> None:
    """The probe's reply must carry ``top_k`` logprobs per position when ``top_k`` asks."""
    if top_k and not tops:
        raise TeacherError(f"{base_url}: returns no logprobs for {model}; use --top-k 0")
    if top_k and tops and len(tops[0]) < top_k:
        raise TeacherError(
            f"--top-k {top_k}: the server returns only {len(tops[0])} logprobs per "
            "position (OpenAI allows 20; vLLM: raise --max-logprobs)"
        )
