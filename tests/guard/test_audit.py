"""The audit log: every queued row is written by close, rows cannot be changed, and the
hashes option keeps no prompt text."""

from __future__ import annotations

import sqlite3

import pytest

from retort.guard.audit import AuditRow, AuditWriter, hashed_body


def row(i: int) -> AuditRow:
    return AuditRow(
        float(i),
        "k",
        "free",
        "127.0.0.1",
        "/v1/completions",
        "m",
        "{}",
        1,
        1,
        200,
        1.0,
        "allowed",
        None,
    )


def test_close_flushes_every_queued_row(tmp_path):
    db = tmp_path / "a.sqlite"
    writer = AuditWriter(db)
    for i in range(5000):
        writer.write(row(i))
    writer.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 5000
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET status = 1")


def test_hashed_bodies_keep_parameters_not_text():
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "secret prompt"}],
        "temperature": 0.5,
    }
    out = hashed_body(body)
    assert out["temperature"] == 0.5 and out["messages"][0]["role"] == "user"
    assert out["messages"][0]["content"].startswith("sha256:")
    assert "secret" not in str(out)
    assert (
        hashed_body({"prompt": "secret"})["prompt"] == hashed_body({"prompt": "secret"})["prompt"]
    )
