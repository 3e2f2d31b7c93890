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
    """Generate with SmolLM2-135M-Instruct, distill a 10-layer student pruned by importance,
    evaluate both.

    Prints one table: the teacher, the pruned student before distillation and after, and the
    wall time of each stage. Everything is written under one run folder.
    """
    from retort.cli.evaluate import eval_table
    from retort.quickstart.pipeline import run_quickstart

    result = run_quickstart(
        budget, run_dir, RichProgress(), on_stage=lambda name: err.print(f"[bold]» {name}[/]")
    )
    table = eval_table(result.report, title=f"quickstart ({budget})")
    table.caption = time_caption(result.stages)
    out.print(table)
    for line in next_steps(result.run_dir):
        out.print(line, highlight=False)


def time_caption(stages: dict[str, float]) -> str:
    """``wall time: load teacher 3s · generate 201s · … · total 612s (10.2 min)``, with
    non-breaking spaces inside each phrase so a narrow terminal wraps only between them."""
    total = sum(stages.values())
    parts = [f"{name} {seconds:.0f}s" for name, seconds in stages.items()]
    parts.append(f"total {total:.0f}s ({total / 60:.1f} min)")
    return "wall time: " + " · ".join(part.replace(" ", "\u00a0") for part in parts)


def next_steps(run_dir: Path) -> list[str]:
    """What to do with the run folder now."""
    student = run_dir / "student"
    return [
        f"report: {run_dir / 'report.html'} (open it in a browser)",
        f"run folder: {run_dir} (eval/eval.json, quickstart.json)",
        "next:",
        f"  retort serve --model {student}          # the distilled student over the OpenAI API",
        f"  retort distill --data {run_dir / 'store-train'} --teacher smollm2-135m-instruct "
        f"--student prune:10:importance --objective topk --max-steps 1000 --out runs/longer"
        "   # train longer",
    ]
