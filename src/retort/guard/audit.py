"""The audit log: one append-only SQLite row per request, written off the request path.

Requests put their row on a queue and go on; one writer thread inserts rows in batches.
Shutdown drains the queue before the thread ends, so no row is lost. Triggers refuse UPDATE
and DELETE: the log is append-only for anyone using the file through SQLite.

The same writer appends the extraction detector's level changes to ``detector_events`` (ts,
key, score, level, reasons as JSON), also append-only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from retort.guard.keys import connect

log = logging.getLogger(__name__)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, key TEXT, tier TEXT, client TEXT,
  endpoint TEXT NOT NULL, model TEXT, body TEXT, prompt_tokens INTEGER,
  completion_tokens INTEGER, status INTEGER NOT NULL, latency_ms REAL, decision TEXT NOT NULL,
  reason TEXT
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS detector_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, key TEXT NOT NULL, score REAL,
  level TEXT NOT NULL, reasons TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS detector_events_key ON detector_events (key, seq);
CREATE TRIGGER IF NOT EXISTS detector_events_no_update BEFORE UPDATE ON detector_events
  BEGIN SELECT RAISE(ABORT, 'detector events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS detector_events_no_delete BEFORE DELETE ON detector_events
  BEGIN SELECT RAISE(ABORT, 'detector events are append-only'); END;
"""
EVENT_COLUMNS = ["ts", "key", "score", "level", "reasons"]
COLUMNS = [
    "ts",
    "key",
    "tier",
    "client",
    "endpoint",
    "model",
    "body",
    "prompt_tokens",
    "completion_tokens",
    "status",
    "latency_ms",
    "decision",
    "reason",
]


@dataclass
class AuditRow:
    """One request as the log keeps it; ``body`` is the request as received (or hashed)."""

    ts: float
    key: str | None
    tier: str | None
    client: str | None
    endpoint: str
    model: str | None
    body: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    status: int
    latency_ms: float
    decision: str
    reason: str | None


@dataclass
class EventRow:
    """One change of a key's detector level; ``reasons`` is a JSON list of
    ``{"feature", "value", "words"}`` (or just ``{"words"}`` for a timed block running out)."""

    ts: float
    key: str
    score: float | None
    level: str
    reasons: str


def events(db: str | Path, key: str | None = None) -> list[EventRow]:
    """The detector's level changes, oldest first: one key's, or the latest of every key."""
    conn = open_audit(db)
    columns = ", ".join(EVENT_COLUMNS)
    if key is None:
        sql = (
            f"SELECT {columns} FROM detector_events WHERE seq IN"
            " (SELECT MAX(seq) FROM detector_events GROUP BY key) ORDER BY seq"
        )
        rows = conn.execute(sql).fetchall()
    else:
        sql = f"SELECT {columns} FROM detector_events WHERE key = ? ORDER BY seq"
        rows = conn.execute(sql, (key,)).fetchall()
    conn.close()
    return [EventRow(*r) for r in rows]


def open_audit(db: str | Path):
    """A connection with the audit table created."""
    conn = connect(db)
    conn.executescript(_SCHEMA)
    return conn


def hashed_body(body: dict[str, Any]) -> dict[str, Any]:
    """The request with its text (prompt, message contents) replaced by sha256 hex digests,
    so the log shows repeats and parameters without holding the prompts."""
    out = dict(body)

    def digest(value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    if "prompt" in out:
        out["prompt"] = digest(out["prompt"])
    if isinstance(out.get("messages"), list):
        out["messages"] = [
            {**m, "content": digest(m.get("content"))} if isinstance(m, dict) else digest(m)
            for m in out["messages"]
        ]
    return out


class AuditWriter:
    """A background thread appending queued rows; ``close`` flushes every one."""

    def __init__(self, db: str | Path, batch: int = 256) -> None:
        self.db, self.batch = db, batch
        open_audit(db).close()
        self._queue: queue.SimpleQueue[AuditRow | EventRow | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="guard-audit", daemon=True)
        self._thread.start()

    def write(self, row: AuditRow | EventRow) -> None:
        """Queue a row (a request's, or a detector event); returns at once (the request path
        never waits on the disk)."""
        self._queue.put(row)

    def close(self, timeout: float = 30) -> None:
        """Write every queued row, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        conn = open_audit(self.db)
        sql = {
            AuditRow: _insert("audit", COLUMNS),
            EventRow: _insert("detector_events", EVENT_COLUMNS),
        }
        stop = False
        while not stop:
            rows = [self._queue.get()]  # block for the first, then take what is waiting
            while len(rows) < self.batch:
                try:
                    rows.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in rows
            rows = [r for r in rows if r is not None]
            for attempt in range(100):  # a locked file (another replica writing) passes
                try:
                    with conn:
                        conn.execute("BEGIN")
                        for kind, statement in sql.items():
                            batch = [astuple(r) for r in rows if type(r) is kind]
                            if batch:
                                conn.executemany(statement, batch)
                    break
                except Exception as exc:
                    log.error("audit write failed (attempt %d): %s", attempt + 1, exc)
                    threading.Event().wait(0.1)
        conn.close()


def _insert(table: str, columns: list[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
