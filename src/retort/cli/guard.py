"""``retort guard``: the gateway (serve), its keys and their detector levels, its audit log,
and the extraction detector's offline verbs (scan, simulate)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer

from retort.cli.console import err, out
from retort.cli.guard_scan import scan
from retort.cli.guard_simulate import simulate

Db = Annotated[str, typer.Option(help="The guard database (keys and audit log; SQLite).")]


def register(app: typer.Typer) -> None:
    guard = typer.Typer(
        help="Guard a model: an OpenAI-compatible gateway with keys, limits, "
        "extraction controls and an audit log.",
        no_args_is_help=True,
    )
    keys = typer.Typer(
        help="Create, list, revoke and rotate API keys; show and override their detector level.",
        no_args_is_help=True,
    )
    log = typer.Typer(help="The audit log.", no_args_is_help=True)
    guard.command("serve", no_args_is_help=True)(serve)
    guard.command("scan", no_args_is_help=True)(scan)
    guard.command("simulate", no_args_is_help=True)(simulate)
    keys.command("create", no_args_is_help=True)(create)
    keys.command("list")(list_keys)
    keys.command("revoke", no_args_is_help=True)(revoke)
    keys.command("rotate", no_args_is_help=True)(rotate)
    keys.command("block", no_args_is_help=True)(block)
    keys.command("unblock", no_args_is_help=True)(unblock)
    keys.command("show", no_args_is_help=True)(show)
    keys.command("override", no_args_is_help=True)(override)
    log.command("export")(export)
    guard.add_typer(keys, name="keys")
    guard.add_typer(log, name="log")
    app.add_typer(guard, name="guard")


def serve(
    upstream: Annotated[str, typer.Option(help="The model's OpenAI-compatible URL (…/v1).")],
    policy: Annotated[str, typer.Option(help="The policy file (guard.yaml).")],
    db: Db = "guard.sqlite",
    redis: Annotated[str | None, typer.Option(help="Redis URL shared by replicas' limits.")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8100,
    upstream_key_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the upstream's API key.")
    ] = None,
) -> None:
    """Serve the gateway: /v1/chat/completions, /v1/completions, /v1/models, /healthz and
    /metrics. `kill -HUP` reloads the policy without dropping requests."""
    import uvicorn

    from retort.guard.app import create_app, upstream_key_from_env

    api = create_app(upstream, policy, db, redis, upstream_key_from_env(upstream_key_env))
    err.print(f"guarding {upstream} on http://{host}:{port}/v1 (Ctrl-C stops)")
    uvicorn.run(api, host=host, port=port, log_level="warning", access_log=False)


def create(
    name: Annotated[str, typer.Option(help="Who the key is for.")],
    tier: Annotated[str, typer.Option(help="The policy tier the key belongs to.")],
    expires: Annotated[str | None, typer.Option(help="30d, 12h, or an ISO date.")] = None,
    db: Db = "guard.sqlite",
    policy: Annotated[
        str | None,
        typer.Option(help="Check the tier exists and record the terms version the key accepts."),
    ] = None,
) -> None:
    """Create a key; the secret is printed once, alone on the last line."""
    from retort.guard.keys import KeyStore, parse_expiry
    from retort.guard.policy import load_policy

    terms = None
    if policy:
        loaded = load_policy(policy)
        loaded.tier(tier)
        terms = loaded.terms.version if loaded.terms else None
    record, secret = KeyStore(db).create(name, tier, parse_expiry(expires), terms)
    err.print(
        f"key {record.id} ({name}, tier {tier}); keep the secret below, it is not shown again"
    )
    print(secret)


def list_keys(db: Db = "guard.sqlite") -> None:
    """Every key: id, name, tier, state, created, expires, terms."""
    from rich.table import Table

    from retort.guard.keys import KeyStore

    table = Table("id", "name", "tier", "state", "created", "expires", "terms")
    now = time.time()
    for k in KeyStore(db).all():
        state = (
            "revoked"
            if k.revoked
            else "expired"
            if not k.usable(now)
            else "blocked"
            if k.blocked
            else "active"
        )
        table.add_row(
            k.id, k.name, k.tier, state, _date(k.created), _date(k.expires), k.terms_version or "-"
        )
    out.print(table)


def revoke(
    key_id: Annotated[str, typer.Argument(help="The key id.")], db: Db = "guard.sqlite"
) -> None:
    """Revoke a key; running gateways refuse it within a second."""
    from retort.guard.keys import KeyStore

    KeyStore(db).revoke(key_id)
    err.print(f"key {key_id} revoked")


def rotate(
    key_id: Annotated[str, typer.Argument(help="The key id.")],
    db: Db = "guard.sqlite",
    policy: Annotated[
        str | None, typer.Option(help="Record the policy's current terms version as accepted.")
    ] = None,
) -> None:
    """A new secret for the key (printed alone on the last line); the old one stops working."""
    from retort.guard.keys import KeyStore
    from retort.guard.policy import load_policy

    terms = None
    if policy:
        loaded = load_policy(policy)
        terms = loaded.terms.version if loaded.terms else None
    _, secret = KeyStore(db).rotate(key_id, terms)
    err.print(f"key {key_id} rotated; the old secret no longer works")
    print(secret)


def block(
    key_id: Annotated[str, typer.Argument(help="The key id.")], db: Db = "guard.sqlite"
) -> None:
    """Block a key: 429 with x-should-retry: false until unblocked."""
    from retort.guard.keys import KeyStore

    KeyStore(db).set_blocked(key_id, True)
    err.print(f"key {key_id} blocked")


def unblock(
    key_id: Annotated[str, typer.Argument(help="The key id.")], db: Db = "guard.sqlite"
) -> None:
    """Lift a block."""
    from retort.guard.keys import KeyStore

    KeyStore(db).set_blocked(key_id, False)
    err.print(f"key {key_id} unblocked")


def show(
    key_id: Annotated[str, typer.Argument(help="The key id.")], db: Db = "guard.sqlite"
) -> None:
    """The key's record, its detector level and override, and its history: every level the
    detector set (with its score and reasons) and every operator override."""
    from rich.table import Table

    from retort.guard.audit import events
    from retort.guard.detect.ladder import standing
    from retort.guard.keys import KeyStore

    store = KeyStore(db)
    k = store.get(key_id)
    overrides, changes = store.overrides(key_id), events(db, key_id)
    out.print(
        f"key {k.id}  name {k.name}  tier {k.tier}  created {_date(k.created)}  "
        f"expires {_date(k.expires)}  terms {k.terms_version or '-'}"
        f"{'  revoked ' + _date(k.revoked) if k.revoked else ''}{'  blocked' if k.blocked else ''}",
        highlight=False,
    )
    now = time.time()
    latest = overrides[-1] if overrides else None
    out.print(f"detector level: {standing(changes, latest, now)}", highlight=False)
    if latest is None:
        out.print("override: none", highlight=False)
    else:
        until = f" until {_date(latest.until)}" if latest.until else ""
        lapsed = "" if latest.in_force(now) else " (lapsed)"
        note = f": {latest.note}" if latest.note else ""
        out.print(
            f"override: {latest.level}{until}{lapsed} by {latest.by or '-'}{note}",
            highlight=False,
        )
    table = Table("when", "by", "score", "level", "reasons")
    rows = [
        (e.ts, "detector", "-" if e.score is None else f"{e.score:.2f}", e.level, _words(e.reasons))
        for e in changes
    ] + [
        (
            o.ts,
            f"operator {o.by or '-'}",
            "-",
            f"override {o.level}" + (f" until {_date(o.until)}" if o.until else ""),
            o.note or "",
        )
        for o in overrides
    ]
    for ts, *cells in sorted(rows, key=lambda r: r[0]):
        table.add_row(_date(ts, seconds=True), *cells)
    if rows:
        out.print(table)
    else:
        out.print("no detector history", highlight=False)


def override(
    key_id: Annotated[str, typer.Argument(help="The key id.")],
    level: Annotated[
        str,
        typer.Option(
            help="auto (the detector decides again, starting from no level), none, log, flag, "
            "tighten, strip_logprobs or block (the policy ladder's step of that action)."
        ),
    ],
    minutes: Annotated[
        float | None, typer.Option(help="How long it holds; left out: until the next override.")
    ] = None,
    note: Annotated[str | None, typer.Option(help="Why (kept in the key's history).")] = None,
    by: Annotated[str | None, typer.Option(help="Who decides (default: your user name).")] = None,
    db: Db = "guard.sqlite",
) -> None:
    """Override the detector's level for a key; running gateways apply it within a second."""
    import getpass

    from retort.errors import ConfigError
    from retort.guard.detect.ladder import check_override_level
    from retort.guard.keys import KeyStore

    check_override_level(level)
    if minutes is not None and minutes <= 0:
        raise ConfigError(f"--minutes: {minutes:g} is not positive; leave it out for no end")
    until = time.time() + minutes * 60 if minutes is not None else None
    made = KeyStore(db).override(key_id, level, until, by or getpass.getuser(), note)
    held = f" until {_date(made.until)}" if made.until else " until the next override"
    err.print(f"key {key_id}: detector level {level}{held}", highlight=False)


def export(
    out_path: Annotated[str, typer.Option("--out", help="File to write.")],
    db: Db = "guard.sqlite",
    since: Annotated[str | None, typer.Option(help="1h, 7d, an ISO date or unix time.")] = None,
    format: Annotated[str, typer.Option("--format", help="jsonl or parquet.")] = "jsonl",
) -> None:
    """Export the audit log in the access-log format `retort guard scan` reads."""
    from retort.guard.export import export as write
    from retort.guard.export import parse_since

    count = write(db, out_path, format, parse_since(since))
    err.print(f"wrote {count} requests to {out_path}")


def _date(ts: float | None, seconds: bool = False) -> str:
    shape = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime(shape)


def _words(reasons: str) -> str:
    """A detector event's reasons (JSON) as the analyst reads them."""
    import json

    try:
        return "; ".join(r.get("words", "") for r in json.loads(reasons) if isinstance(r, dict))
    except ValueError:
        return reasons
