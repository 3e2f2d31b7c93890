"""``retort audit``: does a suspect model carry our watermark? (the provenance audit)"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from retort.cli.console import RichProgress, err


def register(app: typer.Typer) -> None:
    app.command("audit", no_args_is_help=True)(audit)


def audit(
    suspect: Annotated[
        str, typer.Option(help="Suspect: alias, HF folder, hub id, or http(s)://HOST/v1 URL.")
    ],
    key: Annotated[
        list[Path], typer.Option(help="Key file; repeat for several (Bonferroni over keys).")
    ],
    texts: Annotated[
        Path | None,
        typer.Option(help="Reading mode: text to read (JSONL of {text} records, or a store)."),
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(help="Prompts to sample the suspect on (api, sample); reading reads them."),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            help="reading (open weights), api (a URL) or sample (a local model).",
            show_default="reading; api for a URL",
        ),
    ] = None,
    suspect_model: Annotated[
        str | None, typer.Option(help="API mode: the model's name on the server.")
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(help="The key's tokenizer (spec); required in API mode."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the JSON report here (default: stdout).")
    ] = None,
    null_keys: Annotated[
        int, typer.Option(help="Control: repeat the scoring with N random keys (KS test).")
    ] = 0,
    null_seed: Annotated[
        int | None, typer.Option(help="Derive the random keys from this seed (reproducible).")
    ] = None,
    frequent: Annotated[
        int, typer.Option(help="Reading: leave out the corpus's N most frequent k-grams.")
    ] = 100,
    exclude_kgrams: Annotated[
        Path | None, typer.Option(help="Leave out every k-gram of these texts (JSONL or store).")
    ] = None,
    max_length: Annotated[int, typer.Option(help="Reading: ids read at once.")] = 512,
    batch_size: Annotated[int, typer.Option(help="Sequences per forward pass.")] = 8,
    store: Annotated[
        Path | None, typer.Option(help="api/sample: keep the samples in this store (resumable).")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="api/sample: completion length cap.")] = 128,
    temperature: Annotated[float, typer.Option(help="api/sample: sampling temperature.")] = 1.0,
    top_p: Annotated[float, typer.Option(help="api/sample: nucleus sampling mass.")] = 1.0,
    seed: Annotated[int, typer.Option(help="api/sample: sampling seed.")] = 0,
    endpoint: Annotated[
        str, typer.Option(help="API: completions (token ids; same tokenizer) or chat (any).")
    ] = "completions",
    top_k: Annotated[
        int, typer.Option(help="API: logprobs asked for, so tokens return as ids (0: none).")
    ] = 1,
    concurrency: Annotated[int, typer.Option(help="API: requests in flight.")] = 8,
    rpm: Annotated[int | None, typer.Option(help="API: requests per minute, at most.")] = None,
    max_retries: Annotated[int, typer.Option(help="API: retries per request.")] = 5,
    timeout: Annotated[float, typer.Option(help="API: seconds per request.")] = 120.0,
    api_key_env: Annotated[
        str, typer.Option(help="API: environment variable holding the API key.")
    ] = "OPENAI_API_KEY",
) -> None:
    """Test whether a suspect model was trained on text watermarked with KEY: an exact p-value.

    Reading mode (a local model, the default): the suspect reads --texts (or --prompts) and
    its top-1 prediction at each position is scored with the key, given the real context.
    API mode (a URL): the suspect is sampled on --prompts and its pooled completions are
    tested. Each (context, token) pair counts once; pairs whose k-gram occurs in the input
    itself, and the corpus's most frequent k-grams, are left out. A low p-value is evidence,
    not proof; a high one is not evidence of absence (docs/audit.md)."""
    from retort.audit.result import write_report
    from retort.audit.run import AuditSettings, run_audit

    settings = AuditSettings(
        suspect=suspect,
        keys=key,
        mode=mode,
        texts=texts,
        prompts=prompts,
        suspect_model=suspect_model,
        tokenizer=tokenizer,
        frequent=frequent,
        exclude_kgrams=exclude_kgrams,
        max_length=max_length,
        batch_size=batch_size,
        null_keys=null_keys,
        null_seed=null_seed,
        store=store,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        endpoint=endpoint,
        top_k=top_k,
        concurrency=concurrency,
        rpm=rpm,
        max_retries=max_retries,
        timeout=timeout,
        api_key_env=api_key_env,
    )
    result = run_audit(settings, progress=RichProgress())
    if out is None:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2) + "\n")
    else:
        write_report(result, out)
    _summary(result, out)


def _summary(result, out: Path | None) -> None:
    def say(line: str) -> None:  # whole lines: scripts and tests grep them
        err.print(line, highlight=False, soft_wrap=True)

    excluded = ", ".join(f"{n} {name}" for name, n in result.excluded.items())
    say(
        f"audit ({result.mode}) of {result.suspect}: p = {result.p_value:.3g}, "
        f"{result.scored_tokens} tokens scored of {result.positions} positions "
        f"({result.texts} texts); excluded: {excluded}; {result.repeats} repeats"
    )
    if len(result.keys) > 1:
        for score in result.keys:
            p, n = score.p_value, score.scored_tokens
            say(f"  {score.key} ({score.key_id}): p = {p:.3g}, {n} scored")
    if result.null is not None:
        control = result.null
        say(
            f"  null keys: {control.trials}, KS p = {control.ks_p_value:.3g}, "
            f"empirical p = {control.empirical_p_value:.3g}"
        )
    say(result.statement)
    if out is not None:
        say(f"{out}: report written")
