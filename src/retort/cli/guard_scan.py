"""``retort guard scan``: score every key of access logs for extraction, with reasons.

Imported by ``retort.cli.guard`` at start-up, so everything heavy (numpy, the embedder, the
detector) is imported inside the command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retort.cli import console

SHOW_PROBLEMS = 5  # log problems named on the terminal; the HTML report has the first 100


def scan(
    logs: Annotated[
        list[Path],
        typer.Argument(
            help="Access logs: JSONL (`retort guard log export`, .gz too), Parquet, or the "
            "gateway's SQLite database."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Where to write the scores (JSONL, one key a line).")],
    baseline: Annotated[
        list[Path] | None,
        typer.Option(
            help="A log of known-benign traffic for the window test to compare against "
            "(repeatable). Without it the scanned traffic itself is the reference."
        ),
    ] = None,
    html: Annotated[
        Path | None, typer.Option(help="Also write a self-contained HTML report here.")
    ] = None,
    embedder: Annotated[
        str,
        typer.Option(
            help="The embedder for topical, PRADA and window features: hash (character n-grams; "
            "fast, and the best measured on the simulator), minilm (all-MiniLM-L6-v2: "
            "meaning, ~20x slower on CPU), a sentence-transformers folder, module:Class, or "
            "none."
        ),
    ] = "hash",
    weights: Annotated[
        Path | None,
        typer.Option(help="A weights file (default: the packaged fit for the embedder)."),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Flag keys at this score or above (default: the weights' flag_at)."),
    ] = None,
    top: Annotated[int, typer.Option(help="Keys shown in the summary table.")] = 20,
    save_baseline: Annotated[
        Path | None,
        typer.Option(
            help="Also save the window test's benign reference (.npz) built from --baseline "
            "(or from these logs) for the gateway's `detector.baseline`; its embedder must be "
            "the gateway's."
        ),
    ] = None,
) -> None:
    """Score every key of the logs (0-1, higher = more likely a distillation campaign), group
    keys acting together into clusters, and write one JSON object per key to --out."""
    from retort.errors import ConfigError
    from retort.guard.detect.model import Scorer
    from retort.guard.detect.report import summary_table, write_html, write_scores
    from retort.guard.detect.scan import scan as run_scan

    if threshold is not None and not 0.0 < threshold < 1.0:
        raise ConfigError(f"--threshold: {threshold:g} is not between 0 and 1; try 0.5")
    if top < 0:
        raise ConfigError(f"--top: {top} is negative; pass 0 to show no keys")
    chosen = _embedder(embedder)
    if save_baseline is not None and chosen is None:
        raise ConfigError(
            "--save-baseline: the window test needs an embedder; pass --embedder hash or minilm"
        )
    scorer = Scorer.load(weights, getattr(chosen, "name", None))
    if threshold is not None:
        scorer.flag_at = threshold
    result = run_scan(
        logs,
        baseline_paths=baseline or None,
        embedder=chosen,
        scorer=scorer,
        progress=console.RichProgress(),
    )
    write_scores(result, out)
    console.out.print(summary_table(result, top=top))
    for note in result.notes:
        console.err.print(note, highlight=False, soft_wrap=True, markup=False)
    log = result.log
    if log.bad:
        console.err.print(
            f"{log.bad} bad log line{'s' if log.bad != 1 else ''} skipped",
            highlight=False,
            soft_wrap=True,
        )
    problems = len(log.problems) + log.unnamed
    if problems:
        named = log.problems[:SHOW_PROBLEMS]
        console.err.print(
            f"log problems ({len(named)} of {problems} shown):",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
        for problem in named:
            console.err.print(f"  {problem}", highlight=False, soft_wrap=True, markup=False)
    console.err.print(
        f"scores of {len(result.keys)} keys written to {out}", highlight=False, soft_wrap=True
    )
    if save_baseline is not None:
        if result.window_reference is None:
            raise ConfigError(
                f"--save-baseline: no window reference was built ({'; '.join(result.notes)}); "
                "give a larger --baseline log"
            )
        result.window_reference.save(save_baseline)
        console.err.print(
            f"window-test reference ({result.window_reference.embedder}) written to "
            f"{save_baseline}",
            highlight=False,
            soft_wrap=True,
        )
    if html is not None:
        write_html(result, html)
        console.err.print(f"report written to {html}", highlight=False, soft_wrap=True)


def _embedder(name: str | None):
    """The embedder the flag names; None for ``none``."""
    if name is not None and name.lower() == "none":
        return None
    from retort.guard.detect.embed import load_embedder

    return load_embedder(name)
