"""``retort``: the verb table, and how errors and Ctrl-C end a command.

A ``RetortError`` prints one line and exits 2; a usage error (unknown flag) exits 2 with
click's message; Ctrl-C exits 130 after the verb has saved what was done.
"""

from __future__ import annotations

import logging
import os
import sys

import click
import typer

from retort.cli import (
    distill,
    evaluate,
    generate,
    guard,
    inspect,
    merge,
    quickstart,
    serve,
    synth,
)
from retort.errors import RetortError

INTERRUPTED = 130  # the shell's code for a process ended by SIGINT

app = typer.Typer(
    name="retort",
    help="Distill large language models into small ones; guard models against distillation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs rewrap to the terminal width
)
for verb in (quickstart, generate, synth, distill, merge, evaluate, inspect, serve, guard):
    verb.register(app)


def main() -> None:
    """Entry point of the ``retort`` console script and ``python -m retort``."""
    logging.basicConfig(level=os.environ.get("RETORT_LOG", "WARNING"), format="%(message)s")
    _quiet_libraries()
    try:
        code = app(standalone_mode=False)
    except RetortError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except click.exceptions.UsageError as exc:
        exc.show()
        sys.exit(2)
    except (KeyboardInterrupt, click.exceptions.Abort):
        code = INTERRUPTED
    if code == INTERRUPTED:  # typer turns Ctrl-C into Exit(130) after the verb saved its work
        print(
            "interrupted: work done so far is saved; run the same command to go on "
            "(retort distill: add --resume)",
            file=sys.stderr,
        )
    sys.exit(code if isinstance(code, int) else 0)


def _quiet_libraries() -> None:
    """transformers' own progress bars and advice would interleave with ours."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported already (e.g. by a caller): env is read too late
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
