"""Answers written elsewhere: a JSONL file of ``{"id": ..., "answer": ...}`` per prompt."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from retort.errors import ConfigError


@dataclass(frozen=True)
class GivenAnswers:
    """Answers read from ``path`` (``--answers-a``/``--answers-b``), by prompt id."""

    path: Path
    by_id: dict[str, str]
    sha256: str

    @property
    def name(self) -> str:
        return str(self.path)


def read_answers(path: Path, flag: str) -> GivenAnswers:
    """Read and check an answers file; errors name the flag, file and line and the fix."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{flag} {path}: no such file") from None
    by_id: dict[str, str] = {}
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigError(f"{where}: not a JSON object; write one per line") from None
        if not isinstance(record, dict) or "id" not in record or "answer" not in record:
            raise ConfigError(f'{where}: a record needs "id" and "answer"')
        if not isinstance(record["answer"], str):
            raise ConfigError(f'{where}: "answer" must be a string')
        key = str(record["id"])
        if key in by_id:
            raise ConfigError(f"{where}: duplicate id '{key}'; keep one answer per prompt")
        by_id[key] = record["answer"]
    if not by_id:
        raise ConfigError(f"{flag} {path}: no answers; write one JSON object per line")
    return GivenAnswers(path, by_id, hashlib.sha256(data).hexdigest())
