"""``retort synth``: grow a few seed tasks into many prompts with the teacher (self-instruct)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retort.cli.console import RichProgress, err


def register(app: typer.Typer) -> None:
    app.command("synth", no_args_is_help=True)(synth)


def synth(
    teacher: Annotated[str, typer.Option(help="Teacher: alias, HF folder, hub id or URL.")],
    seeds: Annotated[Path, typer.Option(help="Seed tasks: a prompts file (20 are plenty).")],
    out: Annotated[Path, typer.Option(help="JSONL of new prompts (grown if it exists).")],
    count: Annotated[int, typer.Option(min=1, help="New prompts to end with.")] = 1000,
    examples_per_request: Annotated[int, typer.Option(min=1, help="Tasks shown per ask.")] = 3,
    max_overlap: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Word n-gram overlap that makes a duplicate.")
    ] = 0.6,
    max_rounds: Annotated[int, typer.Option(min=1, help="Rounds of asking, at most.")] = 50,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 0.95,
    max_new_tokens: Annotated[
        int, typer.Option(help="Length cap of one answer (a one-sentence task is ~30 tokens).")
    ] = 48,
    batch_size: Annotated[
        int, typer.Option(help="Local teacher: requests generated together.")
    ] = 8,
    seed: Annotated[int, typer.Option(help="Random seed (examples shown, sampling).")] = 0,
    teacher_model: Annotated[str | None, typer.Option(help="HTTP teacher: model name.")] = None,
    tokenizer: Annotated[str | None, typer.Option(help="HTTP teacher: its tokenizer.")] = None,
    concurrency: Annotated[int, typer.Option(help="HTTP: requests in flight.")] = 8,
) -> None:
    """Write new, varied prompts from a few seed tasks: the teacher is shown a few tasks and
    asked for a different one; near-duplicates (word n-gram overlap with a seed or a kept task)
    are dropped. Run it again to continue a stopped run or to grow the file further."""
    from retort.capture.synth import SynthSettings, synthesize
    from retort.config import GenerateConfig, build

    template = build(
        GenerateConfig,
        {
            "teacher": teacher,
            "prompts": seeds,  # replaced by each round's requests
            "out": out,  # likewise
            "temperature": temperature,
            "top_p": top_p,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "teacher_model": teacher_model,
            "tokenizer": tokenizer,
            "concurrency": concurrency,
        },
        "retort synth",
    )
    settings = SynthSettings(
        count=count,
        examples_per_request=examples_per_request,
        max_overlap=max_overlap,
        max_rounds=max_rounds,
        batch_size=batch_size,
        seed=seed,
    )
    tasks = synthesize(seeds, out, template, settings, RichProgress())
    err.print(f"{out}: {len(tasks)} prompts")
