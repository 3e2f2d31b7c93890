"""``retort serve``: an OpenAI-compatible server over a local model."""

from __future__ import annotations

from typing import Annotated

import typer

from retort.cli.console import err


def register(app: typer.Typer) -> None:
    app.command("serve", no_args_is_help=True)(serve)


def serve(
    model: Annotated[str, typer.Option(help="Model spec: alias, HF folder or hub id.")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    served_model_name: Annotated[
        str | None, typer.Option(help="Name clients send as `model` (default: the spec).")
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Requests generated together at most.")] = 8,
    batch_wait_ms: Annotated[
        float, typer.Option(help="How long the first request waits for others to batch with.")
    ] = 10.0,
) -> None:
    """Serve a local model over the OpenAI API: /v1/models, /v1/chat/completions and
    /v1/completions with logprobs, top_logprobs, n, stop, seed, streaming, and vLLM's
    prompt_logprobs. Concurrent requests are batched. Point any OpenAI client (or
    `retort generate --teacher http://HOST:PORT/v1`) at it."""
    import uvicorn

    from retort.serve.app import create_app
    from retort.teachers.local import LocalTeacher

    teacher = LocalTeacher.load(model)
    name = served_model_name or model
    api = create_app(teacher, name, max_batch=max_batch, wait_ms=batch_wait_ms)
    err.print(f"serving {name} on http://{host}:{port}/v1 (Ctrl-C stops)")
    uvicorn.run(api, host=host, port=port, log_level="warning")
