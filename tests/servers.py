"""A raw fault-injecting HTTP server the tests start on 127.0.0.1 (the real one is
``retort.serve.background.serve_in_thread``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable
from typing import Any

from retort.serve.background import free_port


class FaultServer:
    """A minimal HTTP/1.1 server whose answer to each request is chosen by ``respond``.

    ``respond(body) -> action`` returns one of: ("ok", payload) | ("status", code, headers,
    payload) | ("sleep", seconds) | ("reset",) | ("sse_cut",) | ("raw", bytes). Being raw
    asyncio lets it do what a framework would not: cut a body mid-way, send broken JSON.
    """

    def __init__(self, respond: Callable[[dict[str, Any]], tuple]) -> None:
        self.respond = respond
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self.loop
        )
        self.server = started.result(timeout=10)
        return f"http://127.0.0.1:{self.port}/v1"

    def __exit__(self, *exc: Any) -> None:
        async def shutdown() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                _, path, _ = request_line.decode().split(" ", 2)
                headers = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                raw = await reader.readexactly(int(headers.get("content-length", 0)))
                body = json.loads(raw) if raw else {}
                action = ("models",) if path.endswith("/models") else self.respond(body)
                if not await self._answer(writer, action):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, action: tuple) -> bool:
        kind = action[0]
        if kind == "models":
            return await self._send(writer, 200, {}, {"data": [{"id": "tiny"}]})
        if kind == "ok":
            return await self._send(writer, 200, {}, action[1])
        if kind == "status":
            return await self._send(writer, action[1], action[2], action[3])
        if kind == "sleep":
            await asyncio.sleep(action[1])
            return False
        if kind == "reset":  # promise 1000 bytes, send 10, hang up
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b'content-length: 1000\r\n\r\n{"choices"'
            )
            await writer.drain()
            return False
        if kind == "sse_cut":  # an event stream that stops mid-event
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b'content-length: 500\r\n\r\ndata: {"choices": [{"text": "a'
            )
            await writer.drain()
            return False
        if kind == "raw":
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(action[1])).encode()
                + b"\r\n\r\n"
                + action[1]
            )
            await writer.drain()
            return True
        raise ValueError(kind)

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, headers: dict, payload: Any) -> bool:
        data = json.dumps(payload).encode()
        head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"content-length: {len(data)}\r\n\r\n"
        writer.write(head.encode() + data)
        await writer.drain()
        return True
