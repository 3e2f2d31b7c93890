"""``retort``: the verb table, and how errors and Ctrl-C end a command.

A ``RetortError`` prints one line and exits 2; a usage error (unknown flag or verb, bad or
missing value) exits 2 with the usage line, the ``--help`` hint and one ``Error:`` line; a bare
``retort`` or verb prints its help and exits 2; Ctrl-C exits 130 after the verb has saved what
was done.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from retort.cli import (
    audit,
    distill,
    evaluate,
    generate,
    guard,
    inspect,
    judge,
    merge,
    quickstart,
    report,
    serve,
    synth,
    watermark,
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
for verb in (
    quickstart,
    generate,
    synth,
    distill,
    merge,
    evaluate,
    judge,
    inspect,
    report,
    serve,
    guard,
    watermark,
    audit,
):
    verb.register(app)

# typer >= 0.29 raises the classes of its own bundled click, which are unrelated to the click
# package's (older typer raises the package's). ``typer.BadParameter`` is exported by every
# typer version and derives from the ClickException its parser raises, so the class is taken
# from there rather than imported from either click.
CLICK_EXCEPTION: type[Exception] = next(
    base for base in typer.BadParameter.__mro__ if base.__name__ == "ClickException"
)


def main() -> None:
    """Entry point of the ``retort`` console script and ``python -m retort``."""
    logging.basicConfig(level=os.environ.get("RETORT_LOG", "WARNING"), format="%(message)s")
    _quiet_libraries()
    try:
        code = app(standalone_mode=False)
    except RetortError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except CLICK_EXCEPTION as exc:
        _show_usage_error(exc)
        sys.exit(getattr(exc, "exit_code", 2))
    except (KeyboardInterrupt, typer.Abort):
        code = INTERRUPTED
    if code == INTERRUPTED:  # typer turns Ctrl-C into Exit(130) after the verb saved its work
        print(
            "interrupted: work done so far is saved; run the same command to go on "
            "(retort distill: add --resume)",
            file=sys.stderr,
        )
    sys.exit(code if isinstance(code, int) else 0)


def _show_usage_error(exc: Exception) -> None:
    """Usage line, help hint and one ``Error:`` line. A bare verb's help (NoArgsIsHelpError)
    was already printed by typer's rich formatter, leaving an empty message: nothing to add."""
    message = getattr(exc, "format_message", lambda: str(exc))()
    if message.strip():
        exc.show()  # type: ignore[attr-defined]


def _quiet_libraries() -> None:
    """transformers' own progress bars and advice would interleave with ours."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported already (e.g. by a caller): env is read too late
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
