"""Guard fixtures: a policy file, a database with keys, and gateways on 127.0.0.1 in front of
the real tiny `retort serve` (or a fault-injecting upstream)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from retort.guard.app import create_app
from retort.guard.keys import KeyStore
from retort.serve.background import serve_in_thread

POLICY = """
terms: {version: "2026-12", text: "No training other models on the outputs."}
tiers:
  free:
    requests_per_minute: 1000
    output_tokens_per_minute: 100000
    logprobs: off
    max_n: 1
    max_tokens: 16
  research:
    logprobs: {top_k: 2, decimals: 1}
    max_n: 2
    max_tokens: 16
  tight:
    requests_per_minute: 2
    max_tokens: 8
"""


@pytest.fixture
def policy_file(tmp_path) -> Path:
    path = tmp_path / "guard.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "guard.sqlite"


def new_key(db: Path, tier: str = "free", terms: str | None = "2026-12") -> str:
    return KeyStore(db).create("test", tier, terms_version=terms)[1]


@contextlib.contextmanager
def gateway(upstream: str, policy_file: Path, db: Path, **kwargs):
    """A gateway app served in a thread; yields (its /v1 URL, the app)."""
    app = create_app(upstream, policy_file, db, **kwargs)
    with serve_in_thread(app) as url:
        yield url, app


def audit_rows(db: Path, count: int, timeout: float = 10) -> list[dict]:
    """The audit rows, once at least ``count`` are written (the writer is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        conn = sqlite3.connect(db)
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM audit ORDER BY seq")]
        conn.close()
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)
