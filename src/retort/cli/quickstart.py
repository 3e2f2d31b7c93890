"""``retort quickstart``: distill the embedded teacher end to end and print what was kept."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retort.cli.console import RichProgress, err, out


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)


def quickstart(
    budget: Annotated[
        str, typer.Option(help="default (≤ 20 min on 2 CPU cores) or tiny (≤ 5 min).")
    ] = "default",
    run_dir: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default runs/quickstart-TIME).")
    ] = None,
) -> None:
    """Generate with SmolLM2-135M-Instruct, distill a 10-layer pruned student, evaluate both.

    Prints one table: the teacher, the pruned student before distillation and after, and the
    wall time of each stage. Everything is written under one run folder.
    """
    from retort.cli.evaluate import eval_table
    from retort.quickstart.pipeline import run_quickstart

    result = run_quickstart(
        budget, run_dir, RichProgress(), on_stage=lambda name: err.print(f"[bold]» {name}[/]")
    )
    stages = " · ".join(f"{name} {seconds:.0f}s" for name, seconds in result.stages.items())
    total = sum(result.stages.values())
    table = eval_table(result.report, title=f"quickstart ({budget})")
    table.caption = f"wall time: {stages} · total {total:.0f}s ({total / 60:.1f} min)"
    out.print(table)
    out.print(f"run folder: {result.run_dir}")
