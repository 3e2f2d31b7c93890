"""``retort report``: one self-contained HTML page of runs, evals and judge verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retort.cli.console import out


def register(app: typer.Typer) -> None:
    app.command("report", no_args_is_help=True)(report)


def report(
    runs: Annotated[
        list[Path] | None,
        typer.Argument(help="Run folders (retort distill --out) or quickstart folders."),
    ] = None,
    evals: Annotated[
        list[Path] | None,
        typer.Option("--eval", help="eval.json of retort eval (repeatable; or its folder)."),
    ] = None,
    judges: Annotated[
        list[Path] | None,
        typer.Option("--judge", help="judge.json of retort judge (repeatable)."),
    ] = None,
    out_file: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path(
        "report.html"
    ),
    title: Annotated[str, typer.Option(help="Page title.")] = "retort report",
) -> None:
    """Write one HTML file (inline CSS and SVG; opens from disk, no network): the side-by-side
    table with the NLL gap closed, loss curves per term over tokens, held-out metrics over
    training (--eval-data), agreement and KL by position, NLL histograms, quality vs size vs
    speed, prompts with teacher and student answers side by side (differences highlighted),
    the judge's verdicts, and each run's config and data fingerprint. A quickstart folder
    brings its own eval."""
    from retort.errors import ConfigError
    from retort.report.page import write
    from retort.report.sources import gather

    if not runs and not evals and not judges:
        raise ConfigError("nothing to report: give run folders, --eval FILE or --judge FILE")
    if out_file.is_dir():
        raise ConfigError(f"--out {out_file}: is a folder; give an HTML file name")
    sources = gather(runs or [], evals or [], judges or [])
    path = write(sources, out_file, title)
    out.print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB); open it in a browser")
