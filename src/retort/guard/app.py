"""The gateway's FastAPI app: the OpenAI routes, /healthz and /metrics; and, when the policy
enables it, the extraction detector beside it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from retort.errors import ConfigError
from retort.guard.audit import AuditWriter, EventRow, events
from retort.guard.errors import error_response
from retort.guard.gateway import Call, Gateway
from retort.guard.keys import KeyCache
from retort.guard.limits import Limiter, open_storage
from retort.guard.policy import Detector, load_policy
from retort.guard.proxy import Upstream, UpstreamError

log = logging.getLogger(__name__)

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model"],
                    "additionalProperties": True,
                    "properties": {
                        "model": {"type": "string"},
                        "max_tokens": {"type": "integer"},
                        "n": {"type": "integer"},
                        "stream": {"type": "boolean"},
                        "logprobs": {},
                        "top_logprobs": {"type": "integer"},
                        "logit_bias": {"type": "object"},
                        "temperature": {"type": "number"},
                        "messages": {"type": "array", "items": {"type": "object"}},
                        "prompt": {"type": "string"},
                    },
                }
            }
        },
    },
}
_AUTH = {"security": [{"bearer": []}]}


def create_app(
    upstream_url: str,
    policy_path: str | Path,
    db: str | Path = "guard.sqlite",
    redis_url: str | None = None,
    upstream_key: str | None = None,
) -> FastAPI:
    """The gateway in front of ``upstream_url`` (an OpenAI-compatible ``.../v1``)."""
    policy = load_policy(policy_path)  # a bad file fails here, before anything starts
    upstream = Upstream(upstream_url, upstream_key, policy.upstream_timeout_s)
    audit = AuditWriter(db)
    detector = build_detector(policy.detector, db, audit) if policy.detector.enabled else None
    gateway = Gateway(
        policy_path, upstream, KeyCache(db), Limiter(open_storage(redis_url)), audit, detector
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        import asyncio

        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError, AttributeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, gateway.reload)
        try:
            yield
        finally:
            await upstream.close()
            if detector is not None:
                detector.close()  # before the audit writer: a last change may still be queued
            audit.close()  # every queued row is written before the process ends

    app = FastAPI(title="retort guard", lifespan=lifespan, version="1")
    app.state.gateway = gateway
    app.openapi_schema = None

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", openapi_extra=_AUTH)
    async def models(request: Request) -> Response:
        call = Call("/v1/models", request.client.host if request.client else None)
        refused = gateway.authenticate(request, call)
        if refused is not None:
            return refused
        try:
            status, payload = await upstream.get_json("models")
        except UpstreamError as exc:
            return gateway.refuse(
                call, exc.status, exc.message, "upstream_error", exc.message, None
            )
        if status != 200 or not isinstance(payload.get("data"), list):
            return gateway.refuse(
                call,
                502,
                "the upstream's model list is unreadable",
                "upstream_error",
                f"status {status}",
                None,
            )
        allowed = call.tier.models
        data = [
            m
            for m in payload["data"]
            if not allowed or (isinstance(m, dict) and m.get("id") in allowed)
        ]
        gateway.finish(call, 200)
        return Response(json.dumps({"object": "list", "data": data}), media_type="application/json")

    @app.post("/v1/chat/completions", openapi_extra={**_BODY, **_AUTH})
    async def chat(request: Request) -> Response:
        return await gateway.handle(request, "/v1/chat/completions", chat=True)

    @app.post("/v1/completions", openapi_extra={**_BODY, **_AUTH})
    async def completions(request: Request) -> Response:
        return await gateway.handle(request, "/v1/completions", chat=False)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.error("guard: unexpected failure", exc_info=exc)
        return error_response(500, "internal error in the gateway")

    original = app.openapi

    def openapi() -> dict[str, Any]:
        schema = original()
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}
        }
        return schema

    app.openapi = openapi
    return app


def build_detector(config: Detector, db: str | Path, audit: AuditWriter):
    """The online detector the policy describes, its level changes written by ``audit``'s
    thread to ``detector_events``, and each key's last level read back from there (a restart
    keeps blocks). Imports numpy and the families only when the detector is on."""
    from retort.guard.detect.embed import load_embedder
    from retort.guard.detect.model import Scorer
    from retort.guard.detect.online import Change, OnlineDetector

    embedder = None if config.embedder == "none" else load_embedder(config.embedder)
    scorer = Scorer.load(config.weights, getattr(embedder, "name", None))
    reference = None
    if config.baseline is not None:
        from retort.guard.detect.features.window import Reference

        reference = Reference.load(config.baseline)
        names = (reference.embedder or embedder.name, reference.dim)
        if names != (embedder.name, embedder.dim):
            raise ConfigError(
                f"detector.baseline: {config.baseline} holds {reference.dim}-d embeddings of "
                f"'{reference.embedder}', the policy's embedder is {embedder.dim}-d "
                f"'{embedder.name}'; rebuild the baseline with it or set detector.embedder"
            )

    def sink(change: Change) -> None:
        reasons = json.dumps(list(change.reasons))
        audit.write(EventRow(change.ts, change.key, change.score, change.level, reasons))

    detector = OnlineDetector(config, scorer, embedder, reference, sink)
    kept = detector.restore(
        Change(e.ts, e.key, e.score, e.level, tuple(json.loads(e.reasons))) for e in events(db)
    )
    log.warning(
        "detector on: weights %s, embedder %s, %d keys' levels restored",
        scorer.source,
        config.embedder,
        kept,
    )
    return detector


def upstream_key_from_env(name: str | None) -> str | None:
    """The upstream's API key from the environment variable ``name`` (never a flag value, so
    it stays out of shell history and ``ps``)."""
    return os.environ.get(name) if name else None
