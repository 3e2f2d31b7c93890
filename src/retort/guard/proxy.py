"""The upstream client: one pooled ``httpx.AsyncClient`` for every request of the gateway.

Every failure of the upstream (refused connection, timeout, a body that is not the JSON or
event stream it should be) becomes an ``UpstreamError`` with the status the client gets:
504 for a timeout, 502 for the rest.
"""

from __future__ import annotations

import json
from typing import Any

import httpx


class UpstreamError(Exception):
    """The upstream failed; ``status`` is what the gateway answers (502 or 504)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Upstream:
    """An OpenAI-compatible server the gateway forwards to, with its API key kept here."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 120) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
        )

    async def get_json(self, path: str) -> tuple[int, Any]:
        """GET ``path`` (relative to the upstream's /v1); the status and the decoded body."""
        return await self._json(self.client.build_request("GET", path))

    async def post_json(
        self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """POST a request (with extra ``headers``) and read the whole JSON answer."""
        return await self._json(self.client.build_request("POST", path, json=body, headers=headers))

    async def _send(self, request: httpx.Request, stream: bool = False) -> httpx.Response:
        """Send ``request``; a timeout is a 504, any other transport failure a 502."""
        try:
            return await self.client.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise UpstreamError(504, "the upstream model did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(
                502, f"the upstream model is unreachable ({type(exc).__name__})"
            ) from exc

    async def _json(self, request: httpx.Request) -> tuple[int, Any]:
        response = await self._send(request)
        try:
            payload = json.loads(response.content)
        except ValueError as exc:
            raise UpstreamError(
                502, f"the upstream answered {response.status_code} with a body that is not JSON"
            ) from exc
        if response.status_code == 200 and not isinstance(payload, dict):
            raise UpstreamError(502, "the upstream answered with JSON of the wrong shape")
        return response.status_code, payload

    async def open_stream(
        self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """POST a streaming request (with extra ``headers``); returns the open response (the
        caller closes it). A non-200 answer is read whole and raised as an error the caller can
        pass on."""
        request = self.client.build_request("POST", path, json=body, headers=headers)
        response = await self._send(request, stream=True)
        if response.status_code != 200:
            try:
                await response.aread()
            except httpx.HTTPError as exc:
                raise UpstreamError(502, "the upstream's error answer was cut off") from exc
            finally:
                await response.aclose()
        return response

    async def close(self) -> None:
        await self.client.aclose()


async def sse_events(response: httpx.Response):
    """The upstream's server-sent events, one ``bytes`` event (without the blank line) at a
    time, as soon as each is complete; a cut or broken stream raises UpstreamError."""
    buffer = b""
    try:
        async for chunk in response.aiter_raw():
            buffer += chunk
            while True:
                cut = buffer.find(b"\n\n")
                if cut < 0:
                    break
                event, buffer = buffer[:cut], buffer[cut + 2 :]
                if event.strip():
                    yield event
    except httpx.TimeoutException as exc:
        raise UpstreamError(504, "the upstream stopped sending in time") from exc
    except httpx.HTTPError as exc:
        raise UpstreamError(502, f"the upstream stream broke off ({type(exc).__name__})") from exc
    if buffer.strip():
        raise UpstreamError(502, "the upstream stream ended in the middle of an event")
