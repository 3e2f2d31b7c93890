"""``retort guard log export``: the audit log in the access-log format of DESIGN.md.

One object per request: ``ts`` (unix seconds), ``key`` (key id), ``client``, ``endpoint``,
``body`` (the request as received, or its hashes), ``usage`` {prompt_tokens,
completion_tokens}, ``status``; plus the optional ``tier``, ``model``, ``latency_ms``,
``decision`` and ``reason``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from retort.errors import ConfigError, InputError
from retort.guard.audit import COLUMNS, open_audit
from retort.guard.moments import parse_moment


def parse_since(text: str | None, now: float | None = None) -> float:
    """``1h``, ``30m``, ``7d`` ago, an ISO date/time (UTC unless zoned), or unix seconds."""
    if not text:
        return 0.0
    return parse_moment(text, "--since", ago=True, unix_seconds=True, now=now)


def records(db: str | Path, since: float = 0.0) -> Iterator[dict[str, Any]]:
    """The access-log records of requests at or after ``since``, oldest first."""
    if not Path(db).exists():
        raise InputError(f"{db}: no such guard database")
    conn = open_audit(db)
    rows = conn.execute(
        f"SELECT {', '.join(COLUMNS)} FROM audit WHERE ts >= ? ORDER BY seq", (since,)
    )
    for values in rows:
        row = dict(zip(COLUMNS, values, strict=True))
        body = json.loads(row["body"]) if row["body"] else None
        yield {
            "ts": row["ts"],
            "key": row["key"],
            "client": row["client"],
            "endpoint": row["endpoint"],
            "body": body,
            "usage": {
                "prompt_tokens": row["prompt_tokens"],
                "completion_tokens": row["completion_tokens"],
            },
            "status": row["status"],
            "tier": row["tier"],
            "model": row["model"],
            "latency_ms": row["latency_ms"],
            "decision": row["decision"],
            "reason": row["reason"],
        }
    conn.close()


def export(db: str | Path, out: str | Path, fmt: str = "jsonl", since: float = 0.0) -> int:
    """Write the records to ``out`` as JSONL or Parquet; returns how many."""
    out = Path(out)
    rows = list(records(db, since))
    if fmt == "jsonl":
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        # body varies request to request: kept as JSON text so one schema fits every row.
        table = pa.Table.from_pylist(
            [{**r, "body": None if r["body"] is None else json.dumps(r["body"])} for r in rows]
        )
        pq.write_table(table, out)
    else:
        raise ConfigError(f"--format: '{fmt}' is not one of jsonl, parquet")
    return len(rows)
