"""``retort inspect``: what a store holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from retort.cli.console import out


def register(app: typer.Typer) -> None:
    app.command("inspect", no_args_is_help=True)(inspect)


def inspect(
    store: Annotated[Path, typer.Argument(help="Store folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Print a store's rows, tokens, failures, bytes per token and fingerprint."""
    from retort.capture.store import Store

    opened = Store.open(store)
    counts = opened.recount()
    size = sum(p.stat().st_size for p in opened.shard_paths())
    summary = {
        "store": str(store),
        **counts,
        "bytes_on_disk": size,
        "bytes_per_completion_token": size / counts["completion_tokens"]
        if counts["completion_tokens"]
        else None,
        "failures": opened.manifest.get("failures", []),
        "fingerprint": opened.fingerprint,
    }
    if as_json:
        out.print_json(json.dumps(summary))
        return
    out.print(f"[bold]{store}[/bold]")
    if opened.is_text:  # counts are the server's, in the teacher's own tokens
        out.print("  teacher            text only (no tokenizer: no token ids, top-k as strings)")
    out.print(f"  rows               {counts['rows']}")
    out.print(f"  completion tokens  {counts['completion_tokens']}")
    out.print(f"  shards             {counts['shards']}  ({size / 1e6:.2f} MB)")
    if summary["bytes_per_completion_token"]:
        out.print(f"  bytes per token    {summary['bytes_per_completion_token']:.1f}")
    out.print(f"  failures           {len(summary['failures'])}")
    for failure in summary["failures"][:10]:
        out.print(f"    {failure['id']}: {failure['reason']} ({failure['attempts']} attempts)")
    out.print("  fingerprint")
    for key, value in opened.fingerprint.items():
        out.print(f"    {key:22} {value}")
