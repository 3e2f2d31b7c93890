"""The append-only journal: once per key, a torn last line dropped, damage named."""

from __future__ import annotations

import json

import pytest

from retort.errors import StoreError
from retort.judge.journal import Journal


def test_records_survive_reopening_and_a_key_is_written_once(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path, ("id", "kind"))
    journal.append({"id": "p1", "kind": "ab", "verdict": "A"})
    with pytest.raises(ValueError, match="already recorded"):
        journal.append({"id": "p1", "kind": "ab", "verdict": "B"})
    again = Journal(path, ("id", "kind"))
    assert ("p1", "ab") in again and again.get(("p1", "ab"))["verdict"] == "A"
    assert len(path.read_text().splitlines()) == 1


def test_a_torn_last_line_is_dropped_before_appending(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps({"id": "p1", "kind": "ab"}) + '\n{"id": "p2", "ki')
    journal = Journal(path, ("id", "kind"))
    assert [r["id"] for r in journal] == ["p1"]
    journal.append({"id": "p2", "kind": "ab"})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in lines] == ["p1", "p2"]


def test_a_damaged_complete_line_is_named(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps({"id": "p1", "kind": "ab"}) + "\nnot json\n")
    with pytest.raises(StoreError, match=r"j.jsonl:2: not a record"):
        Journal(path, ("id", "kind"))


def test_a_key_twice_in_the_file_is_refused(tmp_path):
    path = tmp_path / "j.jsonl"
    line = json.dumps({"id": "p1", "kind": "ab"}) + "\n"
    path.write_text(line * 2)
    with pytest.raises(StoreError, match=r"j.jsonl:2: .* recorded twice"):
        Journal(path, ("id", "kind"))
