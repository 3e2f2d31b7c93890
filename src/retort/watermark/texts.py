"""What the detector reads: a JSONL of ``text`` records, or a store ``retort generate`` wrote.

- JSONL: one JSON object per line with ``text`` (a string) and optionally ``id``; without
  ``id`` a record is named by its line number. Blank lines are skipped. A line that is not a
  JSON object, or has no ``text`` string, stops the run with an error naming ``file:line``:
  skipping it would report fewer texts than were given, silently.
- A store: each row's ``completion_token_ids`` are scored as written (no decode and re-encode,
  which need not give the same ids back), with the prompt's ids as context for the first
  completion tokens (never scored themselves). The store's tokenizer must be the one given.
- A text store (captured without a tokenizer) has no ids: its completion texts are tokenized
  with the tokenizer given, its messages rendered with that tokenizer's chat template as
  context, as for a JSONL of texts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retort.errors import InputError


@dataclass(frozen=True)
class Text:
    """One text to test: its id, its token ids, and ids before it (context only)."""

    id: str
    token_ids: list[int]
    context: list[int]


def read_texts(path: Path, tokenizer: Any) -> list[Text]:
    """Every text of ``path`` (a JSONL file or a store folder), tokenized with ``tokenizer``.

    Raises:
        InputError: a missing file, or a line that is not a ``text`` record.
        StoreError: a folder that is not a store, or a store of another tokenizer.
    """
    path = Path(path)
    if path.is_dir():
        return _store_texts(path, tokenizer)
    if not path.is_file():
        raise InputError(
            f'{path}: file not found; give a JSONL of {{"text": ...}} records or a store folder'
        )
    texts = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record = _record(path, number, line)
            ids = tokenizer(record["text"], add_special_tokens=False)["input_ids"]
            texts.append(Text(str(record.get("id", number)), list(ids), []))
    return texts


def _record(path: Path, number: int, line: str) -> dict[str, Any]:
    where = f"{path}:{number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        raise InputError(
            f'{where}: not valid JSON; each line is one object like {{"id": "a", "text": "..."}}'
        ) from None
    if not isinstance(record, dict):
        raise InputError(f'{where}: not a JSON object; write {{"text": "..."}} on each line')
    if not isinstance(record.get("text"), str):
        raise InputError(f'{where}: record has no "text" string; add "text" (and optionally "id")')
    return record


def _store_texts(path: Path, tokenizer: Any) -> list[Text]:
    from retort.capture.store import Store
    from retort.errors import StoreError
    from retort.models.vocab import tokenizer_hash

    store = Store.open(path)
    if store.is_text:
        return _text_store_texts(store, tokenizer)
    stored = store.fingerprint.get("tokenizer_sha256")
    if stored and stored != tokenizer_hash(tokenizer):
        raise StoreError(
            f"{path}: store was written with another tokenizer (sha256 {stored[:12]}); "
            "give its teacher's tokenizer with --tokenizer"
        )
    table = store.read_table(["id", "prompt_token_ids", "completion_token_ids"])
    return [
        Text(row["id"], list(row["completion_token_ids"]), list(row["prompt_token_ids"]))
        for row in table.to_pylist()
    ]


def _text_store_texts(store: Any, tokenizer: Any) -> list[Text]:
    """A text store's completions in the given tokenizer's ids (a text store keeps none of
    its own), with its messages rendered by that tokenizer's chat template as context."""
    from retort.teachers.chat import render_prompt

    texts = []
    for row in store.read_table(["id", "messages", "completion"]).to_pylist():
        ids = tokenizer(row["completion"] or "", add_special_tokens=False)["input_ids"]
        context = render_prompt(tokenizer, json.loads(row["messages"]))
        texts.append(Text(row["id"], list(ids), context))
    return texts
