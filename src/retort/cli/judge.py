"""``retort judge``: a judge model compares the answers of models A and B, in both orders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from retort.cli.console import RichProgress, fmt, out


def register(app: typer.Typer) -> None:
    app.command("judge", no_args_is_help=True)(judge)


def judge(
    judge_spec: Annotated[
        str,
        typer.Option("--judge", help="Judge: alias, HF folder, hub id, or http(s)://HOST/v1 URL."),
    ],
    prompts: Annotated[
        Path, typer.Option(help="Prompts (.jsonl/.parquet/.csv); `reference` enables grading.")
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for judgments and judge.json (resumed).")
    ],
    a: Annotated[
        str | None, typer.Option(help="Model A: spec, run folder, prune:N or http(s) URL.")
    ] = None,
    b: Annotated[
        str | None, typer.Option(help="Model B: spec, run folder, prune:N or http(s) URL.")
    ] = None,
    answers_a: Annotated[
        Path | None, typer.Option(help="A's answers as JSONL {id, answer}, instead of --a.")
    ] = None,
    answers_b: Annotated[
        Path | None, typer.Option(help="B's answers as JSONL {id, answer}, instead of --b.")
    ] = None,
    judge_model: Annotated[
        str | None, typer.Option(help="Served judge: the model name on the server.")
    ] = None,
    a_model: Annotated[str | None, typer.Option(help="Served A: its model name.")] = None,
    b_model: Annotated[str | None, typer.Option(help="Served B: its model name.")] = None,
    teacher: Annotated[
        str | None,
        typer.Option(help="The model prune:N prunes (default: the judge, when local)."),
    ] = None,
    judge_prompt: Annotated[
        Path | None,
        typer.Option(help="Pairwise template with {question}, {answer_a}, {answer_b}."),
    ] = None,
    grade_prompt: Annotated[
        Path | None,
        typer.Option(help="Grading template with {question}, {reference}, {answer}."),
    ] = None,
    retries: Annotated[int, typer.Option(help="Re-asks of an unparsable verdict.")] = 2,
    max_answer_tokens: Annotated[int, typer.Option(help="Answer length cap.")] = 256,
    max_judge_tokens: Annotated[int, typer.Option(help="Judgment length cap.")] = 256,
    batch_size: Annotated[int, typer.Option(help="Conversations per batch.")] = 8,
    concurrency: Annotated[int, typer.Option(help="HTTP: requests in flight.")] = 8,
    timeout: Annotated[float, typer.Option(help="HTTP: seconds per request.")] = 120.0,
    max_retries: Annotated[int, typer.Option(help="HTTP: retries of a failed request.")] = 5,
    api_key_env: Annotated[
        str, typer.Option(help="HTTP: environment variable holding the API key.")
    ] = "OPENAI_API_KEY",
) -> None:
    """Answer every prompt with A and B, then ask the judge which answer is better, once with
    A's answer shown first and once with B's (position bias cancels); a prompt with a
    `reference` also has each answer graded correct or incorrect against it.

    Per prompt: both orders agree, or one names a winner and the other a tie → that winner;
    the orders disagree → tie. An unparsable verdict is re-asked up to --retries times and
    then counted as unparsable, never as a tie. Writes judgments.jsonl (every raw judgment)
    and judge.json (win rate of A with a Wilson 95% interval, ties as half a win). Resumable:
    the same command again judges only what is missing. See docs/judge.md.
    """
    from retort.capture.prompts import load_prompts
    from retort.errors import ConfigError
    from retort.judge.answers import read_answers
    from retort.judge.backends import is_url, open_chat
    from retort.judge.run import JudgeSettings
    from retort.judge.run import judge as run
    from retort.judge.templates import load_template
    from retort.teachers.local import LocalTeacher

    settings = JudgeSettings(max_answer_tokens, max_judge_tokens, retries, batch_size)
    pairwise = load_template("pairwise", judge_prompt)
    grade = load_template("grade", grade_prompt)
    records = load_prompts(prompts)
    for side, spec, given in (("a", a, answers_a), ("b", b, answers_b)):
        if (spec is None) == (given is None):
            raise ConfigError(f"give one of --{side} SPEC or --answers-{side} FILE")

    loaded: dict[str, LocalTeacher] = {}
    common: dict[str, Any] = {
        "batch_size": batch_size,
        "concurrency": concurrency,
        "max_retries": max_retries,
        "timeout": timeout,
        "api_key_env": api_key_env,
        "loaded": loaded,
    }
    judge_chat = open_chat(judge_spec, "--judge", served_model=judge_model, base=None, **common)
    base = None
    if teacher is not None:
        if is_url(teacher):
            raise ConfigError(f"--teacher {teacher}: prune:N needs a local model, not a URL")
        if teacher not in loaded:
            loaded[teacher] = LocalTeacher.load(teacher)
        base = loaded[teacher]
    elif not is_url(judge_spec):
        base = loaded[judge_spec]
    models = {}
    for side, spec, served, given in (("a", a, a_model, answers_a), ("b", b, b_model, answers_b)):
        if given is not None:
            models[side] = read_answers(given, f"--answers-{side}")
        else:
            models[side] = open_chat(spec, f"--{side}", served_model=served, base=base, **common)

    report = run(
        records,
        models["a"],
        models["b"],
        judge_chat,
        out_dir,
        settings,
        pairwise=pairwise,
        grade=grade,
        progress=RichProgress(),
    )
    for table in judge_tables(report):
        out.print(table)
    out.print(f"wrote {out_dir / 'judge.json'} and {out_dir / 'judgments.jsonl'}")


def judge_tables(report: dict[str, Any]) -> list[Table]:
    """The pairwise result and, with references, each model's graded accuracy."""
    pair = report["pairwise"]
    names = f"A = {report['a']}\nB = {report['b']}"
    pairwise = Table(
        title=f"judge {report['judge']}: {report['prompts']} prompts, both orders",
        caption=f"{names}\nties count half; unparsable prompts are left out of the win rate; "
        "consistency: share of readable prompts whose two orders agree",
    )
    columns = ("A wins", "B wins", "ties", "unparsable", "win rate A", "95% CI", "consistency")
    for column in columns:
        pairwise.add_column(column, justify="right", no_wrap=True)
    pairwise.add_row(
        str(pair["a_wins"]),
        str(pair["b_wins"]),
        str(pair["ties"]),
        str(pair["unparsable"]),
        fmt(pair["win_rate_a"], 2),
        f"[{pair['ci_low']:.2f}, {pair['ci_high']:.2f}]",
        fmt(pair["position_consistency"], 2),
    )
    tables = [pairwise]
    if report["graded"] is not None:
        graded = Table(title="graded against the references")
        for column in ("model", "correct", "graded", "unparsable", "accuracy", "95% CI"):
            graded.add_column(column, justify="left" if column == "model" else "right")
        for side, entry in report["graded"].items():
            graded.add_row(
                side.upper(),
                str(entry["correct"]),
                str(entry["graded"]),
                str(entry["unparsable"]),
                fmt(entry["accuracy"], 2),
                f"[{entry['ci_low']:.2f}, {entry['ci_high']:.2f}]",
            )
        tables.append(graded)
    return tables
