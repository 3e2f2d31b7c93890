"""``retort merge``: fold a LoRA run's adapter into its student, as a Hugging Face folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retort.cli.console import err


def register(app: typer.Typer) -> None:
    app.command("merge", no_args_is_help=True)(merge)


def merge(
    run: Annotated[Path, typer.Argument(help="A `retort distill --lora` run folder.")],
    out: Annotated[Path | None, typer.Option(help="Folder to write (default RUN/merged).")] = None,
) -> None:
    """Merge RUN/final's LoRA adapter into the run's base student and write a plain model.

    The result loads with transformers' AutoModelForCausalLM, and `retort eval --student RUN`
    picks it up from RUN/merged.
    """
    from retort.models.lora import merge_run

    written = merge_run(run, out)
    err.print(f"{written}: merged model written")
