"""API keys in SQLite (WAL, so several gateway processes on one host share one file).

A key reads ``rk-<id>-<secret>``: the id is public (logs, the CLI), the secret is 256 random
bits, shown once at creation. Only sha256(secret) is stored: a plain fast hash is enough for a
secret of that entropy, where a password hash would only slow every request. The gateway keeps
all keys in memory and reloads them when the file's ``PRAGMA data_version`` says another
connection (the CLI revoking a key) committed, checked at most every ``refresh_s``.

Operators' overrides of the extraction detector's level live beside the keys, in the
append-only ``detector_overrides`` table: the latest row of a key is in force (until its
``until``), the earlier ones are its history.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from retort.errors import InputError
from retort.guard.moments import parse_moment

PREFIX = "rk-"
_KEY = re.compile(r"^rk-([0-9a-f]{12})-([A-Za-z0-9_-]{20,})$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, tier TEXT NOT NULL, hash TEXT NOT NULL,
  created REAL NOT NULL, expires REAL, revoked REAL, terms_version TEXT,
  blocked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS detector_overrides (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, key TEXT NOT NULL,
  level TEXT NOT NULL, until REAL, by TEXT, note TEXT
);
CREATE INDEX IF NOT EXISTS detector_overrides_key ON detector_overrides (key, seq);
CREATE TRIGGER IF NOT EXISTS detector_overrides_no_update BEFORE UPDATE ON detector_overrides
  BEGIN SELECT RAISE(ABORT, 'overrides are append-only: add a new one'); END;
CREATE TRIGGER IF NOT EXISTS detector_overrides_no_delete BEFORE DELETE ON detector_overrides
  BEGIN SELECT RAISE(ABORT, 'overrides are append-only: add a new one'); END;
"""
_OVERRIDE_COLUMNS = "seq, ts, key, level, until, by, note"


@dataclass(frozen=True)
class KeyRecord:
    """One key as stored (never the secret)."""

    id: str
    name: str
    tier: str
    hash: str
    created: float
    expires: float | None
    revoked: float | None
    terms_version: str | None
    blocked: bool

    def usable(self, now: float) -> bool:
        return self.revoked is None and (self.expires is None or now < self.expires)


@dataclass(frozen=True)
class Override:
    """An operator's decision on a key's detector level: ``level`` is ``auto`` (the detector
    decides again, from no level), ``none`` or a ladder action, in force until ``until``
    (unix s; None: until the next override)."""

    seq: int
    ts: float
    key: str
    level: str
    until: float | None
    by: str | None
    note: str | None

    def in_force(self, now: float) -> bool:
        return self.until is None or now < self.until


def connect(db: str | Path) -> sqlite3.Connection:
    """A connection to the guard database in WAL mode, the keys table created."""
    conn = sqlite3.connect(str(db), timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_SCHEMA)
    return conn


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_expiry(text: str | None, now: float | None = None) -> float | None:
    """``30d``, ``12h``, ``90m`` from now, or an ISO date/time (UTC when no zone is given)."""
    if not text:
        return None
    return parse_moment(text, "--expires", ago=False, now=now)


class KeyStore:
    """Create, list, revoke and rotate keys (the CLI's side of the table)."""

    def __init__(self, db: str | Path) -> None:
        self.conn = connect(db)

    def create(
        self, name: str, tier: str, expires: float | None = None, terms_version: str | None = None
    ) -> tuple[KeyRecord, str]:
        """A new key; returns its record and the full secret key, which is never stored."""
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        self.conn.execute(
            "INSERT INTO keys (id, name, tier, hash, created, expires, terms_version)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key_id, name, tier, _digest(secret), time.time(), expires, terms_version),
        )
        return self.get(key_id), f"{PREFIX}{key_id}-{secret}"

    def get(self, key_id: str) -> KeyRecord:
        row = self.conn.execute("SELECT * FROM keys WHERE id = ?", (key_id,)).fetchone()
        if row is None:
            raise InputError(f"no key with id '{key_id}'; `retort guard keys list` shows them")
        return _record(row)

    def all(self) -> list[KeyRecord]:
        return [_record(r) for r in self.conn.execute("SELECT * FROM keys ORDER BY created")]

    def revoke(self, key_id: str) -> KeyRecord:
        self.get(key_id)
        self.conn.execute(
            "UPDATE keys SET revoked = ? WHERE id = ? AND revoked IS NULL", (time.time(), key_id)
        )
        return self.get(key_id)

    def set_blocked(self, key_id: str, blocked: bool) -> KeyRecord:
        self.get(key_id)
        self.conn.execute("UPDATE keys SET blocked = ? WHERE id = ?", (int(blocked), key_id))
        return self.get(key_id)

    def override(
        self,
        key_id: str,
        level: str,
        until: float | None = None,
        by: str | None = None,
        note: str | None = None,
    ) -> Override:
        """Record an operator's detector level for the key (running gateways apply it within
        ``refresh_s``); ``level`` is checked by the caller (``ladder.check_override_level``)."""
        self.get(key_id)
        cursor = self.conn.execute(
            "INSERT INTO detector_overrides (ts, key, level, until, by, note)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), key_id, level, until, by, note),
        )
        return self.overrides(key_id, since_seq=cursor.lastrowid)[-1]

    def overrides(self, key_id: str, since_seq: int = 0) -> list[Override]:
        """The key's overrides, oldest first (the last one is in force, until its until)."""
        rows = self.conn.execute(
            f"SELECT {_OVERRIDE_COLUMNS} FROM detector_overrides WHERE key = ? AND seq >= ?"
            " ORDER BY seq",
            (key_id, since_seq),
        )
        return [Override(*r) for r in rows]

    def rotate(self, key_id: str, terms_version: str | None = None) -> tuple[KeyRecord, str]:
        """A new secret for the same key id (its limits and audit history carry on); the old
        secret stops working at once. Records the current terms version when given."""
        old = self.get(key_id)
        if old.revoked is not None:
            raise InputError(f"key '{key_id}' is revoked; create a new one instead")
        secret = secrets.token_urlsafe(32)
        self.conn.execute(
            "UPDATE keys SET hash = ?, terms_version = COALESCE(?, terms_version) WHERE id = ?",
            (_digest(secret), terms_version, key_id),
        )
        return self.get(key_id), f"{PREFIX}{key_id}-{secret}"


class KeyCache:
    """The gateway's side: every key (and each key's latest override) in memory, reloaded
    when the database changed."""

    def __init__(self, db: str | Path, refresh_s: float = 0.5) -> None:
        self.conn = connect(db)
        self.refresh_s = refresh_s
        self._keys: dict[str, KeyRecord] = {}
        self._overrides: dict[str, Override] = {}
        self._version = -1
        self._checked = 0.0
        self._refresh(force=True)

    def _refresh(self, force: bool = False, now_ok: bool = False) -> None:
        now = time.monotonic()
        if not force and not now_ok and now - self._checked < self.refresh_s:
            return
        self._checked = now
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if force or version != self._version:
            self._version = version
            rows = self.conn.execute("SELECT * FROM keys").fetchall()
            self._keys = {r[0]: _record(r) for r in rows}
            latest = self.conn.execute(
                f"SELECT {_OVERRIDE_COLUMNS} FROM detector_overrides WHERE seq IN"
                " (SELECT MAX(seq) FROM detector_overrides GROUP BY key)"
            )
            self._overrides = {r[2]: Override(*r) for r in latest}

    def override(self, key_id: str) -> Override | None:
        """The key's latest override (in force or not: the detector reads ``until``)."""
        self._refresh()
        return self._overrides.get(key_id)

    def authenticate(self, presented: str | None) -> KeyRecord | None:
        """The usable key matching ``presented`` (a bearer token), or None; the secret's hash
        is compared in constant time, and an unknown id still pays for one comparison."""
        self._refresh()
        match = _KEY.match(presented or "")
        digest = _digest(match.group(2) if match else "")
        record = self._keys.get(match.group(1)) if match else None
        if match and record is None:  # a key created since the last look: look now
            self._refresh(force=False, now_ok=True)
            record = self._keys.get(match.group(1))
        expected = record.hash if record else "0" * 64
        if not hmac.compare_digest(digest, expected) or record is None:
            return None
        return record if record.usable(time.time()) else None


def _record(row: tuple) -> KeyRecord:
    return KeyRecord(*row[:8], blocked=bool(row[8]))
