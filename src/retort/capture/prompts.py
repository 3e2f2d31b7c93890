"""Prompt files: read, validate every record before any teacher call, and assign ids.

A record has ``prompt`` (string) or ``messages`` (OpenAI chat list), and optionally ``id``,
``system``, ``reference`` (the expected answer, used by evaluation) and ``completion`` (existing
text for the teacher to score, in score mode). JSONL, Parquet and CSV
files with those columns are read. Errors name the file and line (1-based; the header is line 1
in a CSV) and the fix.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from retort.errors import InputError

_ROLES = {"system", "user", "assistant", "tool", "developer"}


@dataclass(frozen=True)
class PromptRecord:
    """One validated prompt. ``where`` is ``file:line`` for error messages."""

    id: str | None
    prompt: str | None
    messages: list[dict[str, Any]] | None
    system: str | None
    reference: str | None
    where: str
    completion: str | None = None

    def canonical(self) -> str:
        """The prompt as one string: the text, or the chat turns as compact JSON."""
        if self.messages is not None:
            return json.dumps(self.messages, ensure_ascii=False, separators=(",", ":"))
        return self.prompt or ""

    def with_id(self, sampling: dict[str, Any]) -> PromptRecord:
        """This record with its id: the given one, or a stable hash of prompt and sampling."""
        if self.id is not None:
            return self
        key = json.dumps(
            {
                "prompt": self.canonical(),
                "system": self.system,
                "sampling": sampling,
                **({"completion": self.completion} if self.completion is not None else {}),
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return replace(self, id=digest)


def load_prompts(
    path: Path, sampling: dict[str, Any] | None = None, *, dedup: bool = False
) -> list[PromptRecord]:
    """Read and validate prompts; every record gets an id.

    Args:
        path: a .jsonl, .parquet or .csv file, or a folder saved by ``datasets``
            (``Dataset.save_to_disk``) or holding Parquet files.
        sampling: settings that enter generated ids.
        dedup: drop records whose prompt (and system and completion) repeats an earlier one,
            whitespace-normalized; otherwise such a repeat without an id is an error.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: prompts file not found")
    try:
        rows = list(_read_folder(path) if path.is_dir() else _read_rows(path))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"{path}: cannot read this file ({exc})") from None
    if not rows:
        raise InputError(f"{path}: no records; add one JSON object per line")
    validated = [_validate(raw, f"{path}:{line}") for line, raw in rows]
    if dedup:
        validated = _drop_repeats(validated)
    records: list[PromptRecord] = []
    first_seen: dict[str, PromptRecord] = {}
    for given in validated:
        record = given.with_id(sampling or {})
        first = first_seen.get(record.id or "")
        if first is not None and given.id is None:  # a generated id: the prompt itself repeats
            raise InputError(
                f"{record.where}: the same prompt as {first.where}; remove the repeat, "
                "give each an id, or pass --dedup"
            )
        if first is not None:
            raise InputError(
                f"{record.where}: duplicate id '{record.id}' (first at {first.where});"
                " ids must be unique: remove the repeat or give it another id"
            )
        first_seen[record.id or ""] = record
        records.append(record)
    return records


def _drop_repeats(records: list[PromptRecord]) -> list[PromptRecord]:
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for record in records:
        key = (
            " ".join(record.canonical().split()),
            " ".join((record.system or "").split()),
            " ".join((record.completion or "").split()),
        )
        if key not in seen:
            seen.add(key)
            kept.append(record)
    return kept


def _read_folder(path: Path) -> Any:
    """Yield ``(row_number, dict)`` from a ``datasets`` folder or a folder of Parquet files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    state = path / "state.json"
    if state.is_file():  # Dataset.save_to_disk: Arrow IPC stream files listed in state.json
        files = [path / f["filename"] for f in json.loads(state.read_text())["_data_files"]]
        tables = []
        for file in files:
            with pa.memory_map(str(file)) as source:
                tables.append(pa.ipc.open_stream(source).read_all())
    else:
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise InputError(
                f"{path}: a folder without state.json or .parquet files; give a prompts file, "
                "a datasets folder (save_to_disk) or a folder of Parquet files"
            )
        tables = [pq.read_table(f) for f in files]
    number = 0
    for table in tables:
        for value in table.to_pylist():
            number += 1
            yield number, value


def _read_rows(path: Path) -> Any:
    """Yield ``(line_number, dict)`` from a JSONL, Parquet or CSV file."""
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".json", ".ndjson"}:
        with path.open("rb") as handle:  # decoded line by line, to name a bad line
            for number, raw in enumerate(handle, start=1):
                line = _decode(path, raw, number)
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(
                        f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                        "each line must be one JSON object"
                    ) from None
                yield number, value
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for number, value in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield number, value
    elif suffix == ".csv":
        import csv

        text = _decode(path, path.read_bytes())
        for number, value in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=2):
            yield number, {k: v for k, v in value.items() if v not in (None, "")}
    else:
        raise InputError(f"{path}: unknown prompts format '{suffix}'; use .jsonl, .parquet or .csv")


def _decode(path: Path, data: bytes, first_line: int = 1) -> str:
    """``data`` (text starting at line ``first_line``) as UTF-8; a byte that is not UTF-8 is
    named by its line and column, like every other prompt error."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1  # 1-based, in bytes
        raise InputError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); "
            "save it as UTF-8"
        ) from None


def _validate(raw: Any, where: str) -> PromptRecord:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: a record must be a JSON object, not {type(raw).__name__}")
    prompt, messages = raw.get("prompt"), raw.get("messages")
    if prompt is None and messages is None:
        raise InputError(f'{where}: record has neither "prompt" nor "messages"; add one of them')
    if prompt is not None and messages is not None:
        raise InputError(f'{where}: record has both "prompt" and "messages"; keep one')
    if prompt is not None:
        if not isinstance(prompt, str):
            raise InputError(f'{where}: "prompt" must be a string')
        if not prompt.strip():
            raise InputError(f'{where}: "prompt" is empty; write the prompt or drop the record')
    if isinstance(messages, str):  # Parquet/CSV carry messages as JSON text
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            raise InputError(f'{where}: "messages" is not valid JSON') from None
    if messages is not None:
        _check_messages(messages, where)
    record_id = raw.get("id")
    if record_id is not None:
        if not isinstance(record_id, str | int) or not str(record_id).strip():
            raise InputError(f'{where}: "id" must be a non-empty string')
        record_id = str(record_id)
    for key in ("system", "reference", "completion"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise InputError(f'{where}: "{key}" must be a string')
    return PromptRecord(
        record_id,
        prompt,
        messages,
        raw.get("system"),
        raw.get("reference"),
        where,
        raw.get("completion"),
    )


def _check_messages(messages: Any, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise InputError(f'{where}: "messages" must be a non-empty list of {{role, content}}')
    for index, turn in enumerate(messages):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise InputError(f'{where}: messages[{index}] needs "role" and "content"')
        if turn["role"] not in _ROLES:
            raise InputError(
                f"{where}: messages[{index}] has role {turn['role']!r}; use one of "
                + ", ".join(sorted(_ROLES))
            )
    if not any(str(t["content"]).strip() for t in messages if t["role"] == "user"):
        raise InputError(f"{where}: messages have no non-empty user turn")
