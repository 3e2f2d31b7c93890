"""One proxied request, in the order of DESIGN.md: authenticate → policy → reserve limits →
upstream → reconcile usage → audit row (queued, off the request path).

With the extraction detector on, the key's level applies between the policy and the reserve
(blocked, or a derived tier: limits × factor, logprobs off), and every answered request is
observed after its answer is sent (``loop.call_soon``), so scoring never delays it."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from retort.guard.audit import AuditRow, AuditWriter, hashed_body
from retort.guard.controls import (
    Refused,
    apply_request,
    estimate_input_tokens,
    filter_response,
    reserved_output,
)
from retort.guard.detect.ladder import Effect, TierCache
from retort.guard.detect.request import from_record
from retort.guard.errors import error_body, error_response
from retort.guard.keys import KeyCache, KeyRecord
from retort.guard.limits import Limiter, Refusal, Reservation
from retort.guard.metrics import Metrics
from retort.guard.policy import Policy, Tier, load_policy
from retort.guard.proxy import Upstream, UpstreamError, sse_events
from retort.serve.protocol import WATERMARK_HEADER

if TYPE_CHECKING:  # numpy and the feature families load only when the detector is on
    from retort.guard.detect.online import OnlineDetector

log = logging.getLogger(__name__)
UNAUTHORIZED = "invalid API key; check the key you were given"
LONG_WAIT_S = 60  # past this the SDKs' own backoff is shorter than our Retry-After


@dataclass
class Call:
    """What one request carries from step to step (and into its audit row)."""

    endpoint: str
    client: str | None
    started: float = field(default_factory=time.perf_counter)
    ts: float = field(default_factory=time.time)
    key: KeyRecord | None = None
    tier: Tier | None = None
    body: dict[str, Any] | None = None
    raw_body: dict[str, Any] | None = None
    decision: str = "allowed"
    reason: str | None = None
    usage: tuple[int | None, int | None] = (None, None)
    detector: Effect | None = None  # the key's detector level, when it has one


class Gateway:
    """The gateway's state: the policy (swapped whole on reload), keys, limiter, audit."""

    def __init__(
        self,
        policy_path: str | Path,
        upstream: Upstream,
        keys: KeyCache,
        limiter: Limiter,
        audit: AuditWriter,
        detector: OnlineDetector | None = None,
    ) -> None:
        self.policy_path = Path(policy_path)
        self.policy: Policy = load_policy(policy_path)
        self.upstream, self.keys, self.limiter, self.audit = upstream, keys, limiter, audit
        self.detector, self.derived = detector, TierCache()
        self.metrics = Metrics()
        self.rng = random.Random()

    def reload(self) -> bool:
        """Read the policy file again; a bad file is logged and the old policy kept. Requests in
        flight keep the tier they started with."""
        try:
            policy = load_policy(self.policy_path)
        except Exception as exc:
            log.error("policy not reloaded, the old one stays: %s", exc)
            return False
        old, new = self.policy.detector, policy.detector
        self.policy = policy
        self.derived.clear()
        if self.detector is not None:
            self.detector.reconfigure(new)
        if (old.embedder, old.weights, old.baseline) != (new.embedder, new.weights, new.baseline):
            log.warning("detector: embedder, weights and baseline change on restart only")
        if new.enabled and self.detector is None:
            log.warning("detector: enabled in the policy; it starts when the gateway restarts")
        log.warning("policy reloaded from %s", self.policy_path)
        return True

    def authenticate(self, request: Request, call: Call) -> Response | None:
        """Find the key and its tier; an answer when the request stops here."""
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else None
        call.key = self.keys.authenticate(token)
        if call.key is None:
            return self.refuse(call, 401, UNAUTHORIZED, "unauthorized", None, "invalid_api_key")
        call.tier = self.policy.tiers.get(call.key.tier)
        if call.tier is None:
            return self.refuse(
                call,
                403,
                "this key's tier is not offered any more",
                "refused",
                "tier missing from the policy",
                "tier_unavailable",
            )
        terms = self.policy.terms
        if terms and call.key.terms_version != terms.version:
            return self.refuse(
                call,
                403,
                f"the terms of use changed (version {terms.version}); "
                "ask for your key to be rotated to accept them",
                "refused",
                f"terms {call.key.terms_version} not {terms.version}",
                "terms_not_accepted",
            )
        if call.key.blocked or call.tier.blocked:
            return self.refuse(
                call,
                429,
                "this key is blocked",
                "blocked",
                None,
                "key_blocked",
                {"x-should-retry": "false"},
            )
        return None

    async def handle(self, request: Request, endpoint: str, chat: bool) -> Response:
        """POST /v1/chat/completions or /v1/completions."""
        call = Call(endpoint, request.client.host if request.client else None)
        refused = self.authenticate(request, call)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return self.refuse(
                call,
                400,
                "the body must be a JSON object with a 'model'",
                "refused",
                "bad body",
                None,
            )
        call.raw_body = body
        own_tier = call.tier
        refused = self._detector_level(call)
        if refused is not None:
            return refused
        body = json.loads(json.dumps(body))  # the copy that goes upstream may be rewritten
        try:
            changes = apply_request(body, call.tier, chat)
        except Refused as exc:
            stripped = (
                call.detector is not None
                and call.detector.strip
                and exc.param == "logprobs"
                and own_tier.logprobs.enabled
            )
            decision = "detector_stripped" if stripped else "refused"
            return self.refuse(
                call, exc.status, exc.message, decision, exc.message, exc.code, param=exc.param
            )
        if changes:
            call.decision, call.reason = "modified", "; ".join(changes)
        if call.detector is not None and call.detector.watermark:
            call.decision = "detector_watermarked"  # the reason gets the detector's note
        call.body = body
        reserved_out = reserved_output(body, chat)
        reserved_in = estimate_input_tokens(body)
        held = await self.limiter.reserve(call.key.id, call.tier, reserved_in, reserved_out)
        if isinstance(held, Refusal):
            return self._rate_limited(call, held)
        headers = self._limit_headers(held)
        if body.get("stream"):
            return await self._stream(call, held, headers, reserved_in, reserved_out)
        return await self._answer(call, held, headers, reserved_in, reserved_out)

    def _detector_level(self, call: Call) -> Response | None:
        """Apply the key's detector level: a 429 for a blocked key, else the tier it is answered
        under (limits × factor, logprobs off). log and flag change nothing but the reason."""
        if self.detector is None or not self.policy.detector.enabled:
            return None
        key = call.key.id
        level = self.detector.level(key, call.ts, self.keys.override(key))
        if level is None or level.action == "none":
            return None
        call.detector = level
        if level.blocked:
            headers = {"x-should-retry": "false"}
            if level.until is not None:
                wait = max(level.until - call.ts, 1.0)
                headers["retry-after"] = str(math.ceil(wait))
                headers["retry-after-ms"] = str(math.ceil(wait * 1000))
            return self.refuse(
                call, 429, "this key is blocked", "detector_blocked", None, "key_blocked", headers
            )
        if level.changes_tier:
            call.tier = self.derived.derive(call.tier, level.factor, level.strip)
        return None

    async def _answer(
        self,
        call: Call,
        held: Reservation,
        headers: dict[str, str],
        reserved_in: int,
        reserved_out: int,
    ) -> Response:
        """The non-streamed upstream call. Whatever happens after the reservation, it is
        settled (released) once, and the request gets its audit row."""
        prompt, completion = reserved_in, 0
        try:
            status, payload = await self.upstream.post_json(
                call.endpoint.removeprefix("/v1/"), call.body, _upstream_headers(call)
            )
            if status != 200:
                return self._upstream_status(call, status, payload, headers)
            filter_response(payload, call.tier.logprobs, self.rng)
            usage = payload.get("usage")
            usage = usage if isinstance(usage, dict) else {}
            prompt, completion = (
                _count(usage.get("prompt_tokens"), reserved_in),
                _count(usage.get("completion_tokens"), reserved_out),
            )
            call.usage = (prompt, completion)
            self.finish(call, 200)
            return Response(json.dumps(payload), media_type="application/json", headers=headers)
        except UpstreamError as exc:
            return self.refuse(
                call, exc.status, exc.message, "upstream_error", exc.message, None, headers
            )
        except Exception:
            # A 200 the gateway could not handle: its bad gateway, with the row and the settle.
            log.exception("failed on the upstream's answer to %s", call.endpoint)
            message = "the gateway could not handle the upstream's answer"
            return self.refuse(call, 502, message, "upstream_error", message, None, headers)
        finally:
            with anyio.CancelScope(shield=True):
                await self.limiter.settle(held, call.tier, prompt, completion)

    async def _stream(
        self,
        call: Call,
        held: Reservation,
        headers: dict[str, str],
        reserved_in: int,
        reserved_out: int,
    ) -> Response:
        body = call.body
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        try:
            response = await self.upstream.open_stream(
                call.endpoint.removeprefix("/v1/"), body, _upstream_headers(call)
            )
        except UpstreamError as exc:
            await self.limiter.settle(held, call.tier, reserved_in, 0)
            return self.refuse(
                call, exc.status, exc.message, "upstream_error", exc.message, None, headers
            )
        if response.status_code != 200:
            await self.limiter.settle(held, call.tier, reserved_in, 0)
            try:
                payload = json.loads(response.content)
            except ValueError:
                payload = None
            return self._upstream_status(call, response.status_code, payload, headers)
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aclose()
            await self.limiter.settle(held, call.tier, reserved_in, 0)
            return self.refuse(
                call,
                502,
                "the upstream did not answer with an event stream",
                "upstream_error",
                "not an event stream",
                None,
                headers,
            )
        lp = call.tier.logprobs
        degrade = not lp.enabled or lp.top_k is not None or lp.decimals is not None or lp.noise

        async def events():
            usage: dict[str, Any] = {}
            chunks, status = 0, 200
            try:
                async for event in sse_events(response):
                    if event.startswith(b"data: [DONE]"):
                        yield b"data: [DONE]\n\n"
                        continue
                    if (
                        b'"usage"' in event
                        or b'"error"' in event
                        or (degrade and b"logprobs" in event)
                    ):
                        payload = json.loads(event.partition(b":")[2])
                        if isinstance(payload.get("usage"), dict):
                            usage = payload["usage"]
                            if not wants_usage:
                                if not payload.get("choices"):
                                    continue
                                payload.pop("usage")
                        if "error" in payload:
                            status, call.decision = 502, "upstream_error"
                            call.reason = str(payload["error"])[:500]
                        filter_response(payload, lp, self.rng)
                        event = b"data: " + json.dumps(payload).encode()
                    chunks += 1
                    yield event + b"\n\n"
            except (UpstreamError, ValueError) as exc:
                status, call.decision = 502, "upstream_error"
                call.reason = getattr(exc, "message", "the upstream sent a broken event")
                yield b"data: " + json.dumps(error_body(502, call.reason)).encode() + b"\n\n"
                yield b"data: [DONE]\n\n"
            except BaseException:  # the client went away (a cancellation) mid-stream
                status, call.decision = 499, "client_disconnected"
                call.reason = "the client closed the connection mid-stream"
                raise
            finally:
                prompt = _count(usage.get("prompt_tokens"), reserved_in)
                completion = usage.get("completion_tokens")
                if not isinstance(completion, int):
                    # No usage chunk (an upstream without stream_options): about one token an
                    # event, never more than was reserved.
                    completion = min(max(chunks - 1, 0), reserved_out)
                    call.reason = call.reason or "completion tokens estimated from the stream"
                call.usage = (prompt, completion)
                self.finish(call, status)
                with anyio.CancelScope(shield=True):
                    await response.aclose()
                    await self.limiter.settle(held, call.tier, prompt, completion)

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    def _upstream_status(
        self, call: Call, status: int, payload: Any, headers: dict[str, str]
    ) -> Response:
        """An upstream's own error: a 4xx with an OpenAI error body goes to the client as it
        is (the request was at fault); anything else is a bad gateway."""
        if 400 <= status < 500 and isinstance(payload, dict) and "error" in payload:
            call.decision, call.reason = "upstream_refused", str(payload["error"])[:500]
            self.finish(call, status)
            return Response(
                json.dumps(payload),
                status_code=status,
                media_type="application/json",
                headers=headers,
            )
        message = f"the upstream model failed ({status})"
        return self.refuse(call, 502, message, "upstream_error", message, None, headers)

    def _rate_limited(self, call: Call, refusal: Refusal) -> Response:
        wait = refusal.retry_after_s
        headers = {
            "retry-after": str(max(1, math.ceil(wait))) if math.isfinite(wait) else "86400",
            "retry-after-ms": str(math.ceil(wait * 1000)) if math.isfinite(wait) else "86400000",
        }
        if wait > LONG_WAIT_S:
            headers["x-should-retry"] = "false"
        if not math.isfinite(wait):
            message = f"this request alone is larger than the key's {refusal.budget} limit"
        else:
            message = f"rate limit reached for {refusal.budget}; try again in {wait:.1f}s"
        tightened = (
            call.detector is not None
            and call.detector.factor is not None
            and refusal.budget != "concurrent"
        )
        decision = "detector_tightened" if tightened else "rate_limited"
        return self.refuse(
            call, 429, message, decision, refusal.budget, "rate_limit_exceeded", headers
        )

    def _limit_headers(self, held: Reservation) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.policy.terms:
            headers["x-retort-terms-version"] = self.policy.terms.version
        for name in ("requests", "input-tokens", "output-tokens"):
            if name in held.limits:
                headers[f"x-ratelimit-limit-{name}"] = str(held.limits[name])
                headers[f"x-ratelimit-remaining-{name}"] = str(max(held.remaining[name], 0))
                headers[f"x-ratelimit-reset-{name}"] = _duration(held.reset_s[name])
        tokens = [n for n in ("input-tokens", "output-tokens") if n in held.limits]
        if tokens:  # OpenAI's single token budget: the one nearer to running out
            tight = min(tokens, key=lambda n: held.remaining[n])
            for part in ("limit", "remaining", "reset"):
                headers[f"x-ratelimit-{part}-tokens"] = headers[f"x-ratelimit-{part}-{tight}"]
        return headers

    def refuse(
        self,
        call: Call,
        status: int,
        message: str,
        decision: str,
        reason: str | None,
        code: str | None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> Response:
        """Answer an error in OpenAI's shape, with its audit row and metrics."""
        call.decision, call.reason = decision, reason
        self.finish(call, status)
        return error_response(status, message, param, code, headers)

    def finish(self, call: Call, status: int) -> None:
        """Metrics and the audit row; both return at once."""
        latency = time.perf_counter() - call.started
        tier = call.key.tier if call.key else "-"
        m = self.metrics
        m.requests.labels(tier, call.endpoint, str(status)).inc()
        m.latency.labels(call.endpoint).observe(latency)
        m.decisions.labels(tier, call.decision).inc()
        prompt, completion = call.usage
        if prompt:
            m.tokens.labels(tier, "prompt").inc(prompt)
        if completion:
            m.tokens.labels(tier, "completion").inc(completion)
        reason = call.reason
        if call.detector is not None:
            reason = f"{reason}; {call.detector.note}" if reason else call.detector.note
        watching = self.detector is not None and self.policy.detector.enabled
        if watching and call.key is not None and call.raw_body is not None:
            self._observe(call, status)
        body = call.raw_body
        if body is not None and self.policy.audit.bodies == "hashes":
            body = hashed_body(body)
        self.audit.write(
            AuditRow(
                call.ts,
                call.key.id if call.key else None,
                call.key.tier if call.key else None,
                call.client,
                call.endpoint,
                (call.raw_body or {}).get("model"),
                None if body is None else json.dumps(body),
                prompt,
                completion,
                status,
                latency * 1000,
                call.decision,
                reason,
            )
        )

    def _observe(self, call: Call, status: int) -> None:
        """Give the answered request to the detector once the answer is on its way: a call on
        the event loop's next turn, after this handler has written the response."""
        prompt, completion = call.usage
        record = {
            "ts": call.ts,
            "key": call.key.id,
            "client": call.client,
            "endpoint": call.endpoint,
            "body": call.raw_body,
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
            "status": status,
            "decision": call.decision,
        }
        try:
            asyncio.get_running_loop().call_soon(self._observed, record)
        except RuntimeError:  # no loop (a direct call): observe now
            self._observed(record)

    def _observed(self, record: dict[str, Any]) -> None:
        try:
            self.detector.observe(from_record(record))
        except Exception:  # the detector must never take a request down with it
            log.exception("detector: observing a request of key %s failed", record["key"])


def _count(value: Any, fallback: int) -> int:
    return value if isinstance(value, int) and value >= 0 else fallback


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``850ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s"


def _upstream_headers(call: Call) -> dict[str, str] | None:
    """Headers the upstream call adds: ``x-retort-watermark: on`` for a key at a ``watermark``
    step (``retort serve --watermark KEY --watermark-on-request`` honours it)."""
    if call.detector is not None and call.detector.watermark:
        return {WATERMARK_HEADER: "on"}
    return None
