"""`retort guard keys …` and `retort guard log export` through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pyarrow.parquet as pq

from retort.guard.keys import KeyCache
from tests.guard.conftest import audit_rows, gateway


def retort(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "retort", *args], capture_output=True, text=True, timeout=60
    )


def test_keys_create_list_rotate_revoke(tmp_path, policy_file):
    db = str(tmp_path / "g.sqlite")
    made = retort(
        "guard",
        "keys",
        "create",
        "--name",
        "acme",
        "--tier",
        "free",
        "--expires",
        "30d",
        "--db",
        db,
        "--policy",
        str(policy_file),
    )
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("rk-")
    key_id = secret.split("-")[1]
    assert secret not in (tmp_path / "g.sqlite").read_bytes().decode("latin-1")
    cache = KeyCache(db)
    assert cache.authenticate(secret).terms_version == "2026-12"
    listed = retort("guard", "keys", "list", "--db", db)
    assert key_id in listed.stdout and "active" in listed.stdout and secret not in listed.stdout
    rotated = retort("guard", "keys", "rotate", key_id, "--db", db)
    new = rotated.stdout.strip().splitlines()[-1]
    assert new != secret and new.startswith(f"rk-{key_id}-")
    cache._refresh(force=True)
    assert cache.authenticate(secret) is None and cache.authenticate(new) is not None
    assert retort("guard", "keys", "revoke", key_id, "--db", db).returncode == 0
    cache._refresh(force=True)
    assert cache.authenticate(new) is None
    assert "revoked" in retort("guard", "keys", "list", "--db", db).stdout
    unknown = retort(
        "guard",
        "keys",
        "create",
        "--name",
        "a",
        "--tier",
        "gold",
        "--db",
        db,
        "--policy",
        str(policy_file),
    )
    assert unknown.returncode == 2 and "unknown tier 'gold'" in unknown.stderr


def test_log_export_in_the_access_log_format(tiny_server, tmp_path, policy_file, db):
    from tests.guard.conftest import new_key

    with gateway(tiny_server, policy_file, db) as (url, _):
        key = new_key(db)
        body = {"model": "tiny", "prompt": "Once", "max_tokens": 2}
        httpx.post(f"{url}/completions", json=body, headers={"authorization": f"Bearer {key}"})
        httpx.post(f"{url}/completions", json=body, headers={"authorization": "Bearer nope"})
        audit_rows(db, 2)
    out = tmp_path / "log.jsonl"
    done = retort(
        "guard",
        "log",
        "export",
        "--db",
        str(db),
        "--since",
        "1h",
        "--format",
        "jsonl",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2
    first = records[0]
    assert {"ts", "key", "client", "endpoint", "body", "usage", "status"} <= set(first)
    assert first["key"] == key.split("-")[1] and first["body"] == body
    assert first["usage"]["completion_tokens"] <= 2 and first["client"] == "127.0.0.1"
    assert records[1]["status"] == 401 and records[1]["key"] is None
    parquet = tmp_path / "log.parquet"
    assert (
        retort(
            "guard", "log", "export", "--db", str(db), "--format", "parquet", "--out", str(parquet)
        ).returncode
        == 0
    )
    assert pq.read_table(parquet).num_rows == 2
    empty = tmp_path / "none.jsonl"
    retort("guard", "log", "export", "--db", str(db), "--since", "2999-01-01", "--out", str(empty))
    assert empty.read_text() == ""
