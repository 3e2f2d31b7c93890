"""Reading access logs for the detector: JSONL (plain or gzipped), Parquet as
``retort guard log export`` writes it, and the gateway's own SQLite database.

The format is told by the file's first bytes (SQLite's and Parquet's magic, gzip's), then by
its suffix; anything else is read as JSONL. A bad record never stops a scan: it is counted
against its file and named as a ``Problem`` (the first ``KEEP_PROBLEMS`` of them; the rest
are only counted, so a log of a million broken lines does not fill memory with messages).
A file that cannot be opened, or is not the format it claims to be, is an ``InputError``.

Records without a key (requests the gateway refused before knowing who sent them, logged
with ``"key": null``) are neither requests nor problems: they are counted as ``anonymous``.
Line numbers for Parquet and SQLite count rows from 1.
"""

from __future__ import annotations

import gzip
import json
import math
import sqlite3
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retort.errors import InputError
from retort.guard.detect.request import Request, from_record

KEEP_PROBLEMS = 100  # named problems kept; the rest are counted in LogRead.unnamed
SQLITE_MAGIC = b"SQLite format 3\x00"
PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a log: ``file``, the 1-based ``line`` (row for Parquet/SQLite;
    None for the file as a whole) and ``why``."""

    file: str
    line: int | None
    why: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.why}"


@dataclass
class FileRead:
    """What one file gave: its format, the requests read, bad records, keyless records."""

    path: str
    format: str
    read: int = 0
    bad: int = 0
    anonymous: int = 0


@dataclass
class LogRead:
    """Every request of the logs, sorted by ``ts`` (ties keep file, then line order), the
    problems met (first ``KEEP_PROBLEMS`` named, ``unnamed`` more counted) and per-file
    counts in the order the files were given."""

    requests: list[Request] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[FileRead] = field(default_factory=list)
    unnamed: int = 0

    @property
    def read(self) -> int:
        return sum(f.read for f in self.files)

    @property
    def bad(self) -> int:
        return sum(f.bad for f in self.files)

    def counts(self) -> dict[str, tuple[int, int]]:
        """``{path: (read, bad)}`` for every file."""
        return {f.path: (f.read, f.bad) for f in self.files}

    def note(self, problem: Problem) -> None:
        """Keep a problem, or only count it once ``KEEP_PROBLEMS`` are kept."""
        if len(self.problems) < KEEP_PROBLEMS:
            self.problems.append(problem)
        else:
            self.unnamed += 1


def read_logs(paths: Iterable[str | Path]) -> LogRead:
    """Read access logs into requests, oldest first.

    Args:
        paths: JSONL (``.jsonl``, ``.jsonl.gz``), Parquet or guard SQLite files, any mix.

    Raises:
        InputError: a file is missing, unreadable, or not the format its content claims.
    """
    out = LogRead()
    for path in paths:
        path = Path(path)
        kind = _format(path)
        count = FileRead(str(path), kind)
        out.files.append(count)
        reader = {"jsonl": _jsonl, "parquet": _parquet, "sqlite": _sqlite}[kind]
        for line, record in reader(path, count, out):
            _take(record, line, count, out)
        if count.read + count.bad + count.anonymous == 0:
            out.note(Problem(str(path), None, "no records (an empty log)"))
    out.requests.sort(key=lambda r: r.ts)  # stable: equal ts keep file, then line order
    return out


def _take(record: Any, line: int, count: FileRead, out: LogRead) -> None:
    """One parsed record into a request, or a counted, named problem."""
    if not isinstance(record, dict):
        count.bad += 1
        out.note(Problem(count.path, line, f"not a JSON object ({type(record).__name__})"))
        return
    if "key" in record and record["key"] is None:
        count.anonymous += 1
        return
    try:
        request = from_record(record)
        if not math.isfinite(request.ts):
            raise ValueError("'ts' is not a finite number")
    except KeyError as exc:
        count.bad += 1
        out.note(Problem(count.path, line, f"no {exc}"))
        return
    except (TypeError, ValueError, OverflowError) as exc:
        count.bad += 1
        out.note(Problem(count.path, line, str(exc)))
        return
    count.read += 1
    out.requests.append(request)


def _format(path: Path) -> str:
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such log file") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read the log ({exc.strerror or exc})") from exc
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    if head.startswith(GZIP_MAGIC):
        return "jsonl"
    if head and path.suffix in (".parquet", ".pq"):
        raise InputError(f"{path}: named .parquet but not a Parquet file; check the file")
    if head and path.suffix in (".sqlite", ".sqlite3", ".db"):
        raise InputError(f"{path}: named {path.suffix} but not a SQLite database")
    return "jsonl"


def _jsonl(path: Path, count: FileRead, out: LogRead) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for every non-blank line; bad lines are named here."""
    name = str(path)
    with path.open("rb") as raw:
        gzipped = raw.read(2) == GZIP_MAGIC
    number = 0
    with gzip.open(path, "rb") if gzipped else path.open("rb") as stream:
        lines = iter(stream)
        while True:
            try:
                data = next(lines)
            except StopIteration:
                break
            except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
                # a gzip stream cut short (a partial write) or corrupted: keep what came
                out.note(Problem(name, None, f"the gzip stream is cut short or corrupt ({exc})"))
                break
            except OSError as exc:
                raise InputError(f"{path}: cannot read the log ({exc})") from exc
            number += 1
            if not data.strip():
                continue
            try:
                record = json.loads(data)
            except UnicodeDecodeError:
                count.bad += 1
                out.note(Problem(name, number, "not UTF-8 text"))
                continue
            except json.JSONDecodeError as exc:
                count.bad += 1
                if not data.endswith(b"\n"):
                    out.note(Problem(name, number, "the last line is cut short (a partial write)"))
                else:
                    out.note(Problem(name, number, f"not JSON ({exc.msg})"))
                continue
            yield number, record


def _parquet(path: Path, count: FileRead, out: LogRead) -> Iterator[tuple[int, Any]]:
    """Rows of a Parquet export; ``body`` is JSON text there (one schema fits every row)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = str(path)
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=4096)
        row = 0
        for batch in batches:
            for record in batch.to_pylist():
                row += 1
                body = record.get("body")
                if isinstance(body, str):
                    try:
                        record["body"] = json.loads(body)
                    except json.JSONDecodeError as exc:
                        count.bad += 1
                        out.note(Problem(name, row, f"'body' is not JSON ({exc.msg})"))
                        continue
                yield row, record
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"{path}: not a readable Parquet file ({exc}); export it again with "
            "`retort guard log export --format parquet`"
        ) from exc


def _sqlite(path: Path, count: FileRead, out: LogRead) -> Iterator[tuple[int, Any]]:
    """Rows of the gateway's audit table, through the exporter's own reader."""
    from retort.guard.export import records

    try:  # look read-only first: the exporter's connection creates tables it does not find
        probe = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found = probe.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit'"
            ).fetchone()
        finally:
            probe.close()
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path}: not a readable SQLite database ({exc})") from exc
    if not found:
        raise InputError(f"{path}: a SQLite database with no audit table; pass guard.sqlite")
    row = 0
    try:
        for record in records(path):
            row += 1
            yield row, record
    except (sqlite3.DatabaseError, ValueError) as exc:
        if row == 0:
            raise InputError(f"{path}: cannot read the audit table ({exc})") from exc
        # the exporter's reader cannot resume after a broken row: name it, keep what came
        count.bad += 1
        out.note(Problem(str(path), row + 1, f"unreadable row, the rest skipped ({exc})"))
