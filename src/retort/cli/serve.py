"""``retort serve``: an OpenAI-compatible server over a local model."""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Annotated

import typer

from retort.cli.console import err
from retort.errors import ConfigError


def register(app: typer.Typer) -> None:
    app.command("serve", no_args_is_help=True)(serve)


def serve(
    model: Annotated[str, typer.Option(help="Model spec: alias, HF folder or hub id.")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    served_model_name: Annotated[
        str | None, typer.Option(help="Name clients send as `model` (default: the spec).")
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Requests generated together at most.")] = 8,
    batch_wait_ms: Annotated[
        float, typer.Option(help="How long the first request waits for others to batch with.")
    ] = 10.0,
    watermark: Annotated[
        Path | None,
        typer.Option(help="Watermark every completion with this key (retort watermark keygen)."),
    ] = None,
    watermark_on_request: Annotated[
        bool,
        typer.Option(
            help="With --watermark: only requests with the header `x-retort-watermark: on` (the "
            "guard's `watermark` ladder step) are watermarked. Reach such a server through the "
            "gateway only."
        ),
    ] = False,
) -> None:
    """Serve a local model over the OpenAI API: /v1/models, /v1/chat/completions and
    /v1/completions with logprobs, top_logprobs, n, stop, seed, streaming, and vLLM's
    prompt_logprobs. Concurrent requests are batched. Point any OpenAI client (or
    `retort generate --teacher http://HOST:PORT/v1`) at it.

    With --watermark every completion carries the key's watermark (logprobs stay the model's
    own); a gumbel key refuses temperature 0, which it cannot watermark."""
    import uvicorn

    from retort.serve.app import create_app
    from retort.teachers.local import LocalTeacher
    from retort.watermark.keys import check_tokenizer, load_key

    if watermark_on_request and watermark is None:
        raise ConfigError("--watermark-on-request needs --watermark KEYFILE")
    key = load_key(watermark) if watermark is not None else None
    # Bound before the model loads and before "serving" is printed: a taken port or an
    # unknown host is one line, and uvicorn serves on this very socket (no window to lose it).
    listener = _bind(host, port)
    teacher = LocalTeacher.load(model)
    if key is not None:
        check_tokenizer(key, teacher.tokenizer, flag="the model's tokenizer")
        teacher = teacher.watermarked(key)
    name = served_model_name or model
    api = create_app(
        teacher, name, max_batch=max_batch, wait_ms=batch_wait_ms, on_request=watermark_on_request
    )
    marked = f", watermark {key.scheme} key {key.key_id}" if key is not None else ""
    marked += " (on request)" if watermark_on_request else ""
    err.print(f"serving {name} on http://{host}:{port}/v1{marked} (Ctrl-C stops)")
    server = uvicorn.Server(uvicorn.Config(api, log_level="warning"))
    server.run(sockets=[listener])


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a ConfigError that says which and why."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as exc:
        reason = "in use by another process" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ConfigError(
            f"--host {host} --port {port}: cannot listen there ({reason or exc}); "
            "pick another --port (or stop what holds it)"
        ) from None
    return listener
