"""``retort guard simulate``: labelled API traffic (benign styles, hard negatives and
extraction campaigns) in the gateway's access-log format, for tests, docs and tuning.

Imported by ``retort.cli.guard`` at start-up, so the simulator is imported inside the command."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from retort.cli import console


def simulate(
    out: Annotated[
        Path,
        typer.Option(
            help="Where to write the traffic (JSONL; .jsonl.gz compresses). The labels go "
            "beside it: traffic.jsonl → traffic.labels.json."
        ),
    ],
    seed: Annotated[int, typer.Option(help="Seed of every random stream.")] = 0,
    split: Annotated[
        str,
        typer.Option(
            help="Which half of the text corpora to build requests from: tune on `a`, report "
            "on `b` (they share no source text)."
        ),
    ] = "a",
    scale: Annotated[
        float,
        typer.Option(
            help="Multiplies the number of keys of every style (1.0: 340 benign and 66 "
            "attacker keys, about 68,000 requests over 72 hours)."
        ),
    ] = 1.0,
    hours: Annotated[float, typer.Option(help="How many hours of traffic.")] = 72.0,
    hashed: Annotated[
        bool,
        typer.Option(
            help="Log text as sha256 digests, as a gateway with `audit: {bodies: hashes}`."
        ),
    ] = False,
) -> None:
    """Write simulated traffic of benign users, hard negatives (batch jobs, benchmark runs,
    load tests) and distillation campaigns (template sweeps, chain-of-thought harvesting,
    coverage crawls, a hydra cluster, mixed and slow-and-low keys), with per-key labels."""
    from rich.table import Table

    from retort.guard.detect.simulate import labels_path, write

    started = time.perf_counter()
    counts = write(
        out,
        seed=seed,
        split=split,
        scale=scale,
        hours=hours,
        bodies="hashes" if hashed else "full",
    )
    table = Table(title=f"simulated traffic (seed {seed}, split {split}, {hours:g} h)")
    for column in ("style", "label", "keys", "requests", "429s"):
        table.add_column(column, justify="left" if column in ("style", "label") else "right")
    for style, count in counts.items():
        table.add_row(style, count.label, str(count.keys), str(count.requests), str(count.refused))
    keys = sum(c.keys for c in counts.values())
    requests = sum(c.requests for c in counts.values())
    table.add_row("all", "", str(keys), str(requests), str(sum(c.refused for c in counts.values())))
    console.out.print(table)
    console.err.print(
        f"{requests} requests of {keys} keys written to {out}, labels to {labels_path(out)} "
        f"({time.perf_counter() - started:.1f}s)",
        highlight=False,
        soft_wrap=True,
    )
