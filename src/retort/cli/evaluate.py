"""``retort eval``: students and teacher side by side on held-out teacher data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from retort.cli.console import RichProgress, fmt, out


def register(app: typer.Typer) -> None:
    app.command("eval", no_args_is_help=True)(evaluate)


def evaluate(
    teacher: Annotated[str, typer.Option(help="Teacher model spec.")],
    data: Annotated[Path, typer.Option(help="Held-out store (teacher completions).")],
    student: Annotated[
        list[str], typer.Option(help="Run folder, model spec or prune:N (repeatable).")
    ],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for eval.json.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per forward pass.")] = 8,
    answer_tokens: Annotated[
        int, typer.Option(min=1, help="Answer length for reference grading.")
    ] = 32,
    speed_tokens: Annotated[int, typer.Option(min=1, help="Tokens generated per speed test.")] = 32,
    allow_other_teacher: Annotated[
        bool,
        typer.Option(
            "--allow-other-teacher",
            help="Score against a store another teacher wrote (its teacher row is then not a "
            "reference).",
        ),
    ] = False,
) -> None:
    """Mean NLL of the teacher's completions, top-1 agreement, KL(teacher‖student), reference
    accuracy, T-NLL (the teacher's NLL of the model's own greedy answers: how much the teacher
    likes what the model writes), parameters and greedy tokens/s (batch 1 and 8), per model."""
    from retort.errors import ConfigError
    from retort.evaluate.run import evaluate as run
    from retort.models.students import load_student
    from retort.teachers.local import LocalTeacher

    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: --out is a file; give a folder for eval.json")
    loaded_teacher = LocalTeacher.load(teacher)
    students = {spec: load_student(spec, loaded_teacher)[0] for spec in student}
    report = run(
        loaded_teacher,
        students,
        data,
        out_dir,
        batch_size=batch_size,
        answer_tokens=answer_tokens,
        speed_tokens=speed_tokens,
        progress=RichProgress(),
        allow_other_teacher=allow_other_teacher,
    )
    out.print(eval_table(report))
    if out_dir:
        out.print(f"wrote {out_dir / 'eval.json'}")


def eval_table(report: dict[str, Any], title: str = "held-out evaluation") -> Table:
    """The side-by-side table of an eval report."""
    references = max((e["reference_count"] for e in report["models"]), default=0)
    table = Table(
        title=f"{title}: {report['rows']} held-out rows, {report['target_tokens']} teacher "
        f"tokens, {references} with a reference answer"
    )
    columns = ("model", "params", "NLL↓", "top1↑", "KL↓", "acc↑", "T-NLL↓", "tok/s b1", "tok/s b8")
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for entry in report["models"]:
        accuracy = entry["contains_match"]
        table.add_row(
            entry["name"],
            f"{entry['parameters'] / 1e6:.1f}M",
            fmt(entry["nll"]),
            fmt(entry["top1_agreement"]),
            fmt(entry["kl"]),
            "-" if accuracy is None else f"{accuracy:.2f}",
            fmt(entry["teacher_nll_of_answers"]),
            fmt(entry["tokens_per_s_batch1"], 1),
            fmt(entry["tokens_per_s_batch8"], 1),
        )
    return table
