"""An append-only JSONL file of records, each written once per key and fsync'd.

``retort judge`` keeps its answers and judgments this way: a record is on disk (written, then
``fsync``) before the run counts it done, and a run started again skips every key already in
the file, so a run killed at any instant (``kill -9``) and resumed ends with each key exactly
once. A kill can cut the last line mid-write; opening the file drops that torn line (it was
never counted done) before anything is appended.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from retort.errors import StoreError


class Journal:
    """Records keyed by the values of ``key_fields``; ``append`` refuses a key already there."""

    def __init__(self, path: Path, key_fields: tuple[str, ...]) -> None:
        self.path = Path(path)
        self.key_fields = key_fields
        self.records: dict[tuple[Any, ...], dict[str, Any]] = {}
        if self.path.exists():
            self._read()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
            _fsync_dir(self.path.parent)  # the new file's name survives a crash too

    def key(self, record: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(record[field] for field in self.key_fields)

    def __contains__(self, key: tuple[Any, ...]) -> bool:
        return key in self.records

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records.values())

    def get(self, key: tuple[Any, ...]) -> dict[str, Any] | None:
        return self.records.get(key)

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line and fsync it before returning."""
        key = self.key(record)
        if key in self.records:
            raise ValueError(f"{self.path}: {key} is already recorded")
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self.path.open("ab") as handle:
            handle.write(line.encode())
            handle.flush()
            os.fsync(handle.fileno())
        self.records[key] = record

    def _read(self) -> None:
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):  # a torn last line from a killed run: it never counted
            with self.path.open("r+b") as handle:
                handle.truncate(complete)
                os.fsync(handle.fileno())
        for number, raw in enumerate(data[:complete].splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                key = self.key(record)
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                raise StoreError(
                    f"{self.path}:{number}: not a record of this run "
                    f"(JSON with {', '.join(self.key_fields)}); remove the line or use another "
                    "--out"
                ) from None
            if key in self.records:
                raise StoreError(
                    f"{self.path}:{number}: {key} is recorded twice; remove one of the lines"
                )
            self.records[key] = record


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
