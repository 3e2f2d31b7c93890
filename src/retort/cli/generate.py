"""``retort generate``: capture teacher completions and top-k logprobs into a store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retort.cli.console import RichProgress, err


def register(app: typer.Typer) -> None:
    app.command("generate", no_args_is_help=True)(generate)


def generate(
    teacher: Annotated[str, typer.Option(help="Teacher: alias, HF folder or hub id.")],
    prompts: Annotated[Path, typer.Option(help="Prompts file: .jsonl, .parquet or .csv.")],
    out: Annotated[Path, typer.Option(help="Store folder (created, or resumed if it exists).")],
    top_k: Annotated[int, typer.Option(help="Teacher logprobs kept per position (0: none).")] = 20,
    max_new_tokens: Annotated[int, typer.Option(help="Completion length cap.")] = 128,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together.")] = 8,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
) -> None:
    """Run prompts through a teacher; store completions, token ids and top-k logprobs.

    Resumable: run the same command again and only missing prompts are generated. A store
    made with other settings (teacher, tokenizer, sampling, top-k) is refused.
    """
    from retort.capture.runner import generate as run
    from retort.config import GenerateConfig, build

    config = build(
        GenerateConfig,
        {
            "teacher": teacher,
            "prompts": prompts,
            "out": out,
            "top_k": top_k,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "batch_size": batch_size,
            "seed": seed,
        },
        "retort generate",
    )
    result = run(config, progress=RichProgress())
    counts = result.store.manifest["counts"]
    err.print(
        f"{out}: {result.written} new rows, {result.skipped} already there, "
        f"{len(result.failures)} failed; {counts['rows']} rows, "
        f"{counts['completion_tokens']} completion tokens in the store "
        f"({result.seconds:.1f} s)"
    )
    for failure in result.failures[:5]:
        err.print(f"  failed {failure['id']}: {failure['reason']}")
