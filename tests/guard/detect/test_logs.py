"""Reading access logs: every bad or partial record is counted and named, never a crash; the
gateway's SQLite log and its JSONL and Parquet exports read as the same requests."""

from __future__ import annotations

import gzip
import json
import sqlite3

import pytest

from retort.errors import InputError
from retort.guard.audit import AuditRow, AuditWriter, hashed_body
from retort.guard.detect.logs import KEEP_PROBLEMS, Problem, read_logs
from retort.guard.export import export


def record(ts: float, key: str | None = "k", text: str = "hi", **extra) -> dict:
    return {
        "ts": ts,
        "key": key,
        "client": "10.0.0.1",
        "endpoint": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": text}]},
        "usage": {"prompt_tokens": 3, "completion_tokens": 5},
        "status": 200,
        **extra,
    }


def line(obj) -> str:
    return json.dumps(obj) + "\n"


def test_a_malformed_jsonl_log_is_counted_and_named(tmp_path):
    path = tmp_path / "traffic.jsonl"
    path.write_text(
        line(record(1.0))
        + "not json at all\n"
        + line({"ts": 2.0})
        + line({"ts": "soon", "key": "k"})
        + line({"ts": 3.0, "key": 7})
        + line([1, 2])
        + "\n"  # blank: skipped, neither read nor bad
        + line(record(4.0, key=None))  # refused before the key was known
        + '{"ts": NaN, "key": "k"}\n'
        + line(record(5.0, body="not an object"))  # odd body: a request with no text
        + '{"ts": 6.0, "key": "k", "bo'  # the writer stopped mid-line
    )
    log = read_logs([path])
    assert [str(p) for p in log.problems] == [
        f"{path}:2: not JSON (Expecting value)",
        f"{path}:3: no 'key'",
        f"{path}:4: 'ts' is not a number",
        f"{path}:5: 'key' is not a non-empty string",
        f"{path}:6: not a JSON object (list)",
        f"{path}:9: 'ts' is not a finite number",
        f"{path}:11: the last line is cut short (a partial write)",
    ]
    assert log.counts() == {str(path): (2, 7)}
    assert log.files[0].anonymous == 1 and log.files[0].format == "jsonl"
    assert [(r.ts, r.text) for r in log.requests] == [(1.0, "hi"), (5.0, "")]


def test_a_last_line_without_newline_that_parses_is_kept(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(line(record(1.0)) + json.dumps(record(2.0)))
    log = read_logs([path])
    assert log.counts() == {str(path): (2, 0)} and log.problems == []


def test_problem_reads_as_one_line_with_or_without_a_line_number():
    assert str(Problem("a.jsonl", 17, "no 'key'")) == "a.jsonl:17: no 'key'"
    assert str(Problem("a.jsonl", None, "no records (an empty log)")) == (
        "a.jsonl: no records (an empty log)"
    )


def test_an_empty_log_is_named_not_fatal(tmp_path):
    empty, good = tmp_path / "empty.jsonl", tmp_path / "good.jsonl"
    empty.write_text("")
    good.write_text(line(record(1.0)))
    log = read_logs([empty, good])
    assert log.counts() == {str(empty): (0, 0), str(good): (1, 0)}
    assert [str(p) for p in log.problems] == [f"{empty}: no records (an empty log)"]


def test_a_missing_log_is_an_input_error_naming_it(tmp_path):
    with pytest.raises(InputError, match=r"nope\.jsonl: no such log file"):
        read_logs([tmp_path / "nope.jsonl"])


def test_gzipped_jsonl_is_read_and_a_cut_stream_keeps_what_came(tmp_path):
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(gzip.compress("".join(line(record(float(i))) for i in range(500)).encode()))
    assert read_logs([path]).counts() == {str(path): (500, 0)}
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    log = read_logs([cut])
    assert 0 < log.counts()[str(cut)][0] < 500
    assert any("gzip stream is cut short" in str(p) for p in log.problems)


def test_requests_are_sorted_by_time_ties_in_file_then_line_order(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(line(record(5.0, text="a1")) + line(record(1.0, text="a2")))
    b.write_text(line(record(1.0, text="b1")) + line(record(0.5, text="b2")))
    log = read_logs([a, b])
    assert [r.text for r in log.requests] == ["b2", "a2", "b1", "a1"]


def test_only_the_first_problems_are_kept_the_rest_counted(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("{bad\n" * 250 + line(record(1.0)))
    log = read_logs([path])
    assert len(log.problems) == KEEP_PROBLEMS and log.unnamed == 250 - KEEP_PROBLEMS
    assert log.counts() == {str(path): (1, 250)}


def audit_db(tmp_path):
    """A gateway database written by the gateway's own writer: 3 keyed rows, one keyless,
    one with hashed bodies."""
    db = tmp_path / "guard.sqlite"
    writer = AuditWriter(db)
    bodies = [
        {"model": "m", "messages": [{"role": "user", "content": "first"}], "seed": 1},
        {"model": "m", "prompt": "second", "logprobs": 2},
        hashed_body({"model": "m", "messages": [{"role": "user", "content": "third"}]}),
    ]
    for i, body in enumerate(bodies):
        endpoint = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
        writer.write(
            AuditRow(
                10.0 + i,
                "key-a",
                "free",
                "10.0.0.1",
                endpoint,
                "m",
                json.dumps(body),
                4,
                6,
                200,
                1.0,
                "allowed",
                None,
            )
        )
    writer.write(
        AuditRow(
            13.0,
            None,
            None,
            "10.0.0.9",
            "/v1/chat/completions",
            None,
            None,
            None,
            None,
            401,
            0.1,
            "unauthorized",
            None,
        )
    )
    writer.close()
    return db


def test_the_gateway_database_and_its_exports_read_as_the_same_requests(tmp_path):
    db = audit_db(tmp_path)
    jsonl, parquet = tmp_path / "log.jsonl", tmp_path / "log.parquet"
    export(db, jsonl, "jsonl")
    export(db, parquet, "parquet")
    logs = {path.suffix: read_logs([path]) for path in (db, jsonl, parquet)}
    assert {s: log.files[0].format for s, log in logs.items()} == {
        ".sqlite": "sqlite",
        ".jsonl": "jsonl",
        ".parquet": "parquet",
    }
    for log in logs.values():
        assert list(log.counts().values()) == [(3, 0)] and log.files[0].anonymous == 1
        assert log.problems == []
    requests = logs[".sqlite"].requests
    assert logs[".jsonl"].requests == requests == logs[".parquet"].requests
    assert [r.text for r in requests[:2]] == ["first", "second"]
    assert requests[0].params == {"seed": 1} and requests[1].params == {"logprobs": 2}
    assert requests[2].hashed and not requests[0].hashed
    assert (requests[0].prompt_tokens, requests[0].completion_tokens) == (4, 6)


def test_format_is_told_by_content_not_name(tmp_path):
    db = audit_db(tmp_path)
    disguised = tmp_path / "really-sqlite.jsonl"
    disguised.write_bytes(db.read_bytes())
    assert read_logs([disguised]).files[0].format == "sqlite"


def test_a_parquet_row_whose_body_is_not_json_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{**record(1.0), "body": "{broken"}, {**record(2.0), "body": json.dumps({})}]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    log = read_logs([path])
    assert log.counts() == {str(path): (1, 1)}
    assert [str(p) for p in log.problems] == [
        f"{path}:1: 'body' is not JSON (Expecting property name enclosed in double quotes)"
    ]


def test_files_that_are_not_what_they_claim_are_input_errors(tmp_path):
    fake = tmp_path / "t.parquet"
    fake.write_text(line(record(1.0)))
    with pytest.raises(InputError, match=r"t\.parquet: named \.parquet but not a Parquet file"):
        read_logs([fake])
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(InputError, match=r"other\.sqlite: a SQLite database with no audit table"):
        read_logs([other])
    assert "audit" not in str(
        sqlite3.connect(other).execute("SELECT name FROM sqlite_master").fetchall()
    )  # looked at read-only: no table created in someone else's database
    cut = tmp_path / "cut.parquet"
    export(audit_db(tmp_path), cut, "parquet")
    cut.write_bytes(cut.read_bytes()[:-20])
    with pytest.raises(InputError, match=r"cut\.parquet: not a readable Parquet file"):
        read_logs([cut])
