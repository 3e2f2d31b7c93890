"""``retort guard``: the gateway (serve), its keys, and its audit log."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer

from retort.cli.console import err, out

Db = Annotated[str, typer.Option(help="The guard database (keys and audit log; SQLite).")]


def register(app: typer.Typer) -> None:
    guard = typer.Typer(
        help="Guard a model: an OpenAI-compatible gateway with keys, limits, "
        "extraction controls and an audit log.",
        no_args_is_help=True,
    )
    keys = typer.Typer(help="Create, list, revoke and rotate API keys.", no_args_is_help=True)
    log = typer.Typer(help="The audit log.", no_args_is_help=True)
    guard.command("serve", no_args_is_help=True)(serve)
    keys.command("create", no_args_is_help=True)(create)
    keys.command("list")(list_keys)
    keys.command("revoke", no_args_is_help=True)(revoke)
    keys.command("rotate", no_args_is_help=True)(rotate)
    keys.command("block", no_args_is_help=True)(block)
    keys.command("unblock", no_args_is_help=True)(unblock)
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


def _date(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")
