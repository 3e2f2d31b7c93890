"""``retort watermark``: make a key (keygen), and test texts for its watermark (detect)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from retort.cli.console import err


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Watermark keys and the detector (exact p-values); generate and serve embed them "
        "with --watermark KEYFILE.",
        no_args_is_help=True,
    )
    group.command("keygen", no_args_is_help=True)(keygen)
    group.command("detect", no_args_is_help=True)(detect)
    app.add_typer(group, name="watermark")


def keygen(
    out: Annotated[Path, typer.Option(help="Key file to write (JSON, mode 0600).")],
    scheme: Annotated[
        str, typer.Option(help="kgw (green lists, logit bias) or gumbel (Gumbel-max sampling).")
    ] = "kgw",
    gamma: Annotated[
        float | None, typer.Option(help="kgw: share of green ids per context [default: 0.25].")
    ] = None,
    delta: Annotated[
        float | None, typer.Option(help="kgw: bias added to green logits [default: 2].")
    ] = None,
    seeding: Annotated[
        str, typer.Option(help="kgw: lefthash (the h ids before) or selfhash (h-1 and the id).")
    ] = "lefthash",
    context: Annotated[
        int | None,
        typer.Option(help="h, ids the PRF reads [default: 1 lefthash, 4 selfhash and gumbel]."),
    ] = None,
    dual: Annotated[
        bool, typer.Option(help="gumbel: two secrets, one drawn per step (more diverse text).")
    ] = False,
    tokenizer: Annotated[
        str | None,
        typer.Option(help="Record this tokenizer (spec): other tokenizers are then refused."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing key file.")] = False,
) -> None:
    """Create a watermark key: the scheme, its settings and a fresh 32-byte secret.

    Keep the file secret: whoever holds it can detect, and forge, the watermark. Its key id
    (printed, and recorded in stores) names it without revealing it."""
    from retort.watermark.keys import new_key, save_key

    key = new_key(
        scheme,
        seeding=seeding,
        context_width=context,
        gamma=gamma,
        delta=delta,
        dual=dual,
        tokenizer=_tokenizer(tokenizer) if tokenizer else None,
        name=str(out),
    )
    save_key(key, out, force=force)
    settings = f"gamma {key.gamma}, delta {key.delta}, " if key.scheme == "kgw" else ""
    err.print(
        f"{out}: {key.scheme}{' dual' if key.dual else ''} key {key.key_id} "
        f"({settings}{key.seeding} h={key.context_width}); keep it secret"
    )


def detect(
    texts: Annotated[
        Path,
        typer.Argument(metavar="TEXTS", help="JSONL of {id, text} records, or a store folder."),
    ],
    key: Annotated[
        list[Path], typer.Option(help="Key file; repeat for several (Bonferroni over keys).")
    ],
    tokenizer: Annotated[
        str, typer.Option(help="The tokenizer the key watermarks (folder, hub id or alias).")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Write the results here (JSONL) instead of stdout.")
    ] = None,
    window: Annotated[
        int | None,
        typer.Option(min=1, help="Test every run of N scored tokens (a watermarked span)."),
    ] = None,
) -> None:
    """Test each text for the watermark: one JSON object per text with id, scored_tokens,
    score, p_value (exact: binomial tail for kgw, Gamma tail for gumbel) and z_score.

    Each (context, token) pair counts once. With several keys the smallest p-value is
    multiplied by their number, and `key` names the one that gave it; with --window the
    smallest p over the runs is multiplied by their number, and `window` gives its span."""
    from retort.watermark.detect import detect_many
    from retort.watermark.keys import check_tokenizer, load_key
    from retort.watermark.texts import read_texts

    keys = [load_key(path) for path in key]  # a bad key file fails before the tokenizer loads
    loaded = _tokenizer(tokenizer)
    for one in keys:
        check_tokenizer(one, loaded)
    lines = []
    for text in read_texts(texts, loaded):
        result = detect_many(text.token_ids, keys, context=text.context, window=window)
        record = {
            "id": text.id,
            "scored_tokens": result.scored_tokens,
            "score": result.score,
            "p_value": result.p_value,
            "z_score": result.z_score,
        }
        if len(keys) > 1:
            record["key"] = result.key
        if window is not None:
            record["window"] = list(result.window) if result.window else None
        lines.append(json.dumps(record) + "\n")
    if out is None:
        sys.stdout.write("".join(lines))
    else:
        partial = out.with_name(f".{out.name}.partial")
        partial.write_text("".join(lines))
        os.replace(partial, out)
        err.print(f"{out}: {len(lines)} texts tested")


def _tokenizer(spec: str):
    from retort.errors import ConfigError, RetortError
    from retort.models.loading import load_tokenizer, resolve

    try:
        return load_tokenizer(resolve(spec))
    except RetortError as exc:
        raise ConfigError(f"--tokenizer {spec}: {exc}") from None
