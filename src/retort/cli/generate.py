"""``retort generate``: capture teacher completions and top-k logprobs into a store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retort.cli.console import RichProgress, err


def register(app: typer.Typer) -> None:
    app.command("generate", no_args_is_help=True)(generate)


def generate(
    teacher: Annotated[
        str, typer.Option(help="Teacher: alias, HF folder, hub id, or http(s)://HOST/v1 URL.")
    ],
    prompts: Annotated[
        Path,
        typer.Option(help="Prompts: .jsonl/.parquet/.csv, a datasets folder or Parquet folder."),
    ],
    out: Annotated[Path, typer.Option(help="Store folder (created, or resumed if it exists).")],
    mode: Annotated[
        str,
        typer.Option(help="generate (the teacher writes) or score (it scores each `completion`)."),
    ] = "generate",
    top_k: Annotated[int, typer.Option(help="Teacher logprobs kept per position (0: none).")] = 20,
    codec: Annotated[
        str, typer.Option(help="Top-k storage: plain (int32/float32) or q8 (~2.6x smaller).")
    ] = "plain",
    max_new_tokens: Annotated[int, typer.Option(help="Completion length cap.")] = 128,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together.")] = 8,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    dedup: Annotated[
        bool, typer.Option(help="Drop prompts that repeat an earlier one (whitespace-insensitive).")
    ] = False,
    rows_per_shard: Annotated[int, typer.Option(help="Rows per Parquet shard written.")] = 64,
    shard: Annotated[
        str | None, typer.Option(help="i/n: take shard i of n (n processes fill one store).")
    ] = None,
    watermark: Annotated[
        Path | None,
        typer.Option(help="Watermark the teacher's text with this key (local teachers only)."),
    ] = None,
    teacher_model: Annotated[
        str | None, typer.Option(help="HTTP teacher: the model name on the server.")
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="HTTP teacher: its tokenizer (folder, hub id or alias). Without it, "
            "--endpoint completions reads --teacher-model as one, and --endpoint chat loads "
            "none: a text store (messages, text, top-k as token strings)."
        ),
    ] = None,
    api_key_env: Annotated[
        str, typer.Option(help="HTTP teacher: environment variable holding the API key.")
    ] = "OPENAI_API_KEY",
    endpoint: Annotated[
        str,
        typer.Option(
            help="HTTP teacher: completions (token ids, exact) or chat (messages; any "
            "OpenAI-style API, with or without --tokenizer)."
        ),
    ] = "completions",
    concurrency: Annotated[int, typer.Option(help="HTTP: requests in flight.")] = 8,
    rpm: Annotated[int | None, typer.Option(help="HTTP: requests per minute, at most.")] = None,
    tpm: Annotated[int | None, typer.Option(help="HTTP: tokens per minute, at most.")] = None,
    timeout: Annotated[float, typer.Option(help="HTTP: seconds per request.")] = 120.0,
    max_retries: Annotated[int, typer.Option(help="HTTP: retries per request.")] = 5,
    max_teacher_tokens: Annotated[
        int | None, typer.Option(help="HTTP: stop (cleanly, resumable) after this many tokens.")
    ] = None,
    price_per_1k_in: Annotated[float, typer.Option(help="HTTP: price per 1k prompt tokens.")] = 0.0,
    price_per_1k_out: Annotated[
        float, typer.Option(help="HTTP: price per 1k completion tokens.")
    ] = 0.0,
    max_cost: Annotated[
        float | None, typer.Option(help="HTTP: stop once this is spent (same currency).")
    ] = None,
) -> None:
    """Run prompts through a teacher; store completions, token ids and top-k logprobs.

    Resumable: run the same command again and only missing prompts (and recorded failures)
    are generated. A store made with other settings (teacher, tokenizer, sampling, top-k) is
    refused. With an http(s) teacher, requests run concurrently under client-side rate limits
    and retries; every prompt ends as a row or as a failure recorded in the manifest.

    With --endpoint chat and no --tokenizer the teacher is known by its text alone (a hosted
    API whose tokenizer is not public): no tokenizer is loaded, and the store keeps the
    messages, the completion text, finish reason and usage, and with --top-k the teacher's
    top-k as token strings with their bytes. Train on it with retort distill --objective sft
    (its text) or --objective cross_tokenizer (its top-k, aligned by bytes).

    With --watermark KEYFILE the local teacher's completions carry the key's watermark, and
    the store's fingerprint names the key id (a resume with another key is refused); the
    stored logprobs stay the teacher's own. A served teacher watermarks on its server
    (retort serve --watermark KEYFILE).
    """
    from retort.capture.runner import generate as run
    from retort.config import GenerateConfig, build

    config = build(
        GenerateConfig,
        {
            "teacher": teacher,
            "prompts": prompts,
            "out": out,
            "mode": mode,
            "top_k": top_k,
            "codec": codec,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "batch_size": batch_size,
            "seed": seed,
            "dedup": dedup,
            "rows_per_shard": rows_per_shard,
            "shard": shard,
            "watermark": watermark,
            "teacher_model": teacher_model,
            "tokenizer": tokenizer,
            "api_key_env": api_key_env,
            "endpoint": endpoint,
            "concurrency": concurrency,
            "rpm": rpm,
            "tpm": tpm,
            "timeout": timeout,
            "max_retries": max_retries,
            "max_teacher_tokens": max_teacher_tokens,
            "price_per_1k_in": price_per_1k_in,
            "price_per_1k_out": price_per_1k_out,
            "max_cost": max_cost,
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
    if result.retries or result.teacher_tokens:
        err.print(
            f"  HTTP: {result.retries} retries, {result.teacher_tokens} teacher tokens, "
            f"cost {result.cost:.4f}, {result.not_attempted} prompts left by the budget"
        )
    for failure in result.failures[:5]:
        err.print(f"  failed {failure['id']}: {failure['reason']}")
