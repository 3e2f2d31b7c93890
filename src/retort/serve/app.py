"""The OpenAI-compatible HTTP API: /v1/models, /v1/chat/completions, /v1/completions.

Responses follow OpenAI's shapes (chat ``logprobs.content`` with ``top_logprobs``; legacy
completions ``logprobs`` with ``tokens``/``token_logprobs``/``top_logprobs``), plus vLLM's
``prompt_logprobs`` and ``return_tokens_as_token_ids``. Errors use OpenAI's error body; a
generation that fails (out of memory, say) answers 500 with it, or, streamed, ends the stream
with an error event and ``[DONE]``.

Sampling: choice i of a request with ``seed`` samples from a seed derived from (seed, i), so
choices differ and repeat exactly; without ``seed`` every choice draws fresh randomness.

Watermark (``retort serve --watermark KEYFILE``): the teacher watermarks every completion;
logprobs stay the model's own. A gumbel key answers temperature 0 with 400, since greedy output
cannot carry it (a client must not get unwatermarked text by asking for it). With
``on_request`` only requests carrying ``x-retort-watermark: on`` are watermarked: the guard
gateway sets it for keys its detector moved to a ``watermark`` step, so only a server reachable
through the gateway alone should run that way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from retort.serve.engine import BatchingEngine, Job, stop_cut
from retort.serve.protocol import WATERMARK_HEADER, ChatRequest, CompletionRequest
from retort.teachers.chat import leading_bos, render_prompt
from retort.teachers.decoding import derive_seed
from retort.teachers.local import LocalTeacher
from retort.teachers.protocol import Generation
from retort.teachers.tokens import TokenText

DEFAULT_MAX_TOKENS = 256
log = logging.getLogger(__name__)


class APIError(Exception):
    """An error answered with OpenAI's error body."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def create_app(
    teacher: LocalTeacher,
    served_name: str,
    max_batch: int = 8,
    wait_ms: float = 10,
    on_request: bool = False,
) -> FastAPI:
    """The FastAPI app serving ``teacher`` under the model name ``served_name``; with
    ``on_request``, the teacher's watermark goes only to requests asking for it (see above)."""
    engine = BatchingEngine(teacher, max_batch=max_batch, wait_ms=wait_ms)
    tokens = TokenText(teacher.tokenizer)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        yield
        await engine.stop()

    app = FastAPI(title="retort serve", lifespan=lifespan)
    app.state.engine = engine

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if p != "body")
        return _error(400, f"{param}: {first['msg']}", param)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": served_name, "object": "model", "created": 0, "owned_by": "retort"}],
        }

    @app.get("/health")
    async def health() -> dict[str, Any]:
        stats = engine.stats
        return {
            "ok": True,
            "jobs": stats.jobs,
            "batches": stats.batches,
            "largest_batch": stats.largest_batch,
        }

    def _marked(request: Request) -> bool:
        if teacher.watermark is None:
            return False
        return not on_request or request.headers.get(WATERMARK_HEADER, "").lower() == "on"

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> Any:
        _check_model(body.model, served_name)
        turns = [{"role": m.role, "content": m.text()} for m in body.messages]
        prompt_ids = render_prompt(teacher.tokenizer, turns)
        return await _complete(body, prompt_ids, chat=True, marked=_marked(request))

    # Raw text is a base model's prompt: it starts with BOS where the tokenizer itself puts one
    # (as local capture renders it), not only where the client sent token ids.
    bos = leading_bos(teacher.tokenizer)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        _check_model(body.model, served_name)
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            prompt_ids = list(prompt)
        elif isinstance(prompt, list):
            if len(prompt) != 1:
                raise APIError(400, "prompt: send one prompt per request", "prompt")
            prompt_ids = bos + teacher.tokenizer(prompt[0], add_special_tokens=False)["input_ids"]
        else:
            prompt_ids = bos + teacher.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return await _complete(body, prompt_ids, chat=False, marked=_marked(request))

    async def _complete(body: Any, prompt_ids: list[int], chat: bool, marked: bool) -> Any:
        if not prompt_ids:
            raise APIError(400, "prompt is empty", "prompt")
        limit = teacher.max_positions
        max_tokens = body.completion_limit() or DEFAULT_MAX_TOKENS
        if limit and len(prompt_ids) + max_tokens > limit:
            raise APIError(
                400,
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) exceeds "
                f"the model's {limit} positions",
                "max_tokens",
            )
        key = teacher.watermark
        if marked and key is not None and key.scheme == "gumbel" and body.temperature == 0:
            raise APIError(
                400,
                "temperature: this server watermarks by Gumbel sampling, which needs "
                "temperature > 0 (1 keeps the model's distribution)",
                "temperature",
            )
        top_k = body.logprobs_k()
        if body.stream and (top_k is not None or body.prompt_logprobs is not None):
            raise APIError(
                400, "logprobs with stream are not supported; send stream=false", "stream"
            )
        jobs = [
            Job(
                prompt_ids,
                max_tokens,
                body.temperature,
                body.top_p,
                None if body.seed is None else derive_seed(body.seed, index),
                top_k or 0,
                body.stops(),
                watermark=marked,
            )
            for index in range(body.n)
        ]
        request_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        if body.stream:
            usage_for = (
                len(prompt_ids)
                if body.stream_options and body.stream_options.include_usage
                else None
            )
            return StreamingResponse(
                _stream(jobs, request_id, chat, usage_for), media_type="text/event-stream"
            )
        try:
            outputs = await asyncio.gather(*(engine.generate(j) for j in jobs))
            scored = None
            if body.prompt_logprobs is not None:
                scored = (await engine.score([prompt_ids], body.prompt_logprobs))[0]
        except Exception as exc:
            raise APIError(500, _failure(exc)) from exc
        prompt_scores = None
        if scored is not None:
            prompt_scores = _prompt_logprobs(
                prompt_ids, tokens, scored, body.return_tokens_as_token_ids
            )
        as_id = body.return_tokens_as_token_ids
        choices = []
        for index, out in enumerate(outputs):
            text = teacher.tokenizer.decode(out.completion_ids, skip_special_tokens=True)
            choice: dict[str, Any] = {"index": index, "finish_reason": out.finish_reason}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
                choice["logprobs"] = (
                    None if top_k is None else {"content": _chat_logprobs(out, tokens, as_id)}
                )
            else:
                choice["text"] = text
                choice["logprobs"] = (
                    None if top_k is None else _completion_logprobs(out, tokens, as_id)
                )
            if prompt_scores is not None:
                choice["prompt_logprobs"] = prompt_scores
            choices.append(choice)
        completion_tokens = sum(len(o.completion_ids) for o in outputs)
        return {
            "id": request_id,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": served_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": len(prompt_ids),
                "completion_tokens": completion_tokens,
                "total_tokens": len(prompt_ids) + completion_tokens,
            },
        }

    async def _stream(
        jobs: list[Job], request_id: str, chat: bool, usage_for: int | None
    ) -> AsyncIterator[str]:
        """SSE chunks; with ``usage_for`` (the prompt's token count, asked for through
        ``stream_options.include_usage``) a last chunk with no choices carries the usage."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[int, int | Generation | Exception]] = asyncio.Queue()
        for index, job in enumerate(jobs):
            job.on_token = lambda token, i=index: loop.call_soon_threadsafe(
                events.put_nowait, (i, token)
            )

        async def finish(index: int, job: Job) -> None:
            try:
                events.put_nowait((index, await engine.generate(job)))
            except Exception as exc:  # ends the stream below, instead of leaving it open
                events.put_nowait((index, exc))

        tasks = [asyncio.create_task(finish(i, j)) for i, j in enumerate(jobs)]
        created = int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(index: int, text: str | None, finish_reason: str | None) -> str:
            if chat:
                delta = {} if text is None else {"content": text}
                if text == "" and finish_reason is None:
                    delta = {"role": "assistant", "content": ""}
                choice = {"index": index, "delta": delta, "finish_reason": finish_reason}
            else:
                choice = {"index": index, "text": text or "", "finish_reason": finish_reason}
            body = {
                "id": request_id,
                "object": kind,
                "created": created,
                "model": served_name,
                "choices": [choice],
            }
            return f"data: {json.dumps(body)}\n\n"

        finished: list[Generation] = []
        try:
            async for event in _events(chunk, events, jobs, finished):
                yield event
        finally:  # a failure or a client gone: no one waits for the other choices any more
            for task in tasks:
                task.cancel()
        if usage_for is not None and len(finished) == len(jobs):
            completion_tokens = sum(len(g.completion_ids) for g in finished)
            usage = {
                "prompt_tokens": usage_for,
                "completion_tokens": completion_tokens,
                "total_tokens": usage_for + completion_tokens,
            }
            last = {"id": request_id, "object": kind, "created": created, "model": served_name}
            yield f"data: {json.dumps({**last, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    async def _events(
        chunk: Any, events: asyncio.Queue, jobs: list[Job], finished: list[Generation]
    ) -> AsyncIterator[str]:
        """The stream's chunks, up to the last choice's end or the first failure."""
        for index in range(len(jobs)):
            yield chunk(index, "", None)
        streamed = [[] for _ in jobs]  # token ids seen so far, per choice
        sent = [0] * len(jobs)  # characters of text already sent, per choice
        done = 0
        while done < len(jobs):
            index, item = await events.get()
            if isinstance(item, Exception):
                body = {"error": _error_body(500, _failure(item), None)}
                yield f"data: {json.dumps(body)}\n\n"
                return
            if isinstance(item, Generation):  # the job finished: send what is left, then end
                finished.append(item)
                text = teacher.tokenizer.decode(item.completion_ids, skip_special_tokens=True)
                if text[sent[index] :]:
                    yield chunk(index, text[sent[index] :], None)
                yield chunk(index, None, item.finish_reason)
                done += 1
                continue
            job = jobs[index]
            streamed[index].append(item)
            if len(streamed[index]) > job.max_tokens or (
                job.stops and stop_cut(teacher.tokenizer, streamed[index], job.stops) is not None
            ):
                continue  # past this job's end: the final result trims it
            text = teacher.tokenizer.decode(streamed[index], skip_special_tokens=True)
            # Hold back text that may still become a stop string, and partial UTF-8.
            hold = max((len(s) - 1 for s in job.stops), default=0)
            ready = len(text) - hold
            if text.endswith("\ufffd"):
                ready = min(ready, len(text) - 1)
            if ready > sent[index]:
                yield chunk(index, text[sent[index] : ready], None)
                sent[index] = ready

    return app


def _check_model(requested: str, served_name: str) -> None:
    if requested != served_name:
        raise APIError(
            404, f"model '{requested}' not found; this server serves '{served_name}'", "model"
        )


def _error(status: int, message: str, param: str | None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": _error_body(status, message, param)})


def _error_body(status: int, message: str, param: str | None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"message": message, "type": kind, "param": param, "code": None}


def _failure(exc: Exception) -> str:
    """The message a client gets for a generation that raised; the traceback goes to the log."""
    log.error("generation failed", exc_info=exc)
    return f"generation failed: {type(exc).__name__}: {exc}"


def _chat_logprobs(out: Generation, tokens: TokenText, as_id: bool) -> list[dict[str, Any]]:
    content = []
    for position, token_id in enumerate(out.completion_ids):
        text, raw = tokens(token_id, as_id)
        top = []
        for alt_id, alt_logprob in zip(
            out.topk_ids[position] if out.topk_ids else [],
            out.topk_logprobs[position] if out.topk_logprobs else [],
            strict=True,
        ):
            alt_text, alt_raw = tokens(alt_id, as_id)
            top.append({"token": alt_text, "logprob": alt_logprob, "bytes": alt_raw})
        content.append(
            {
                "token": text,
                "logprob": out.token_logprobs[position],
                "bytes": raw,
                "top_logprobs": top,
            }
        )
    return content


def _completion_logprobs(out: Generation, tokens: TokenText, as_id: bool) -> dict[str, Any]:
    texts, offsets, top, offset = [], [], [], 0
    for position, token_id in enumerate(out.completion_ids):
        text, _ = tokens(token_id, as_id)
        texts.append(text)
        offsets.append(offset)
        offset += len(text)
        top.append(
            {
                tokens(alt, as_id)[0]: lp
                for alt, lp in zip(
                    out.topk_ids[position] if out.topk_ids else [],
                    out.topk_logprobs[position] if out.topk_logprobs else [],
                    strict=True,
                )
            }
        )
    return {
        "tokens": texts,
        "token_logprobs": out.token_logprobs,
        "top_logprobs": top,
        "text_offset": offsets,
    }


def _prompt_logprobs(
    prompt_ids: list[int], tokens: TokenText, scored: Any, as_id: bool
) -> list[Any]:
    """vLLM's shape: None for the first token, then {token_id: {logprob, rank, decoded_token}}
    holding the actual token and the top-k."""
    result: list[Any] = [None]
    for position, actual in enumerate(prompt_ids[1:]):
        entry = {
            str(actual): {
                "logprob": scored.token_logprobs[position],
                "rank": scored.ranks[position],
                "decoded_token": tokens(actual, as_id)[0],
            },
        }
        for rank, (alt, lp) in enumerate(
            zip(scored.topk_ids[position], scored.topk_logprobs[position], strict=True), start=1
        ):
            decoded = tokens(alt, as_id)[0]
            entry.setdefault(str(alt), {"logprob": lp, "rank": rank, "decoded_token": decoded})
        result.append(entry)
    return result
