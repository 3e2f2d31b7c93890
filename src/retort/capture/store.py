"""The store: a directory of Parquet shards and a manifest, written so a kill never corrupts it.

Layout::

    STORE/manifest.json        format, version, fingerprint, counts, failures of the last run
    STORE/shards/*.parquet     one row per prompt; written whole, then renamed into place

A row exists once its shard is renamed into place, and a resumed run skips ids already present,
so a run killed at any instant and started again ends with every prompt present exactly once.
``datasets.load_dataset("parquet", data_files="STORE/shards/*.parquet")`` reads it.

A *text store* (a teacher without a tokenizer, see text_rows.py) has the same layout and
guarantees with other columns (``TEXT_SCHEMA``): text and token strings, no token ids.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from retort.capture import codec
from retort.capture.text_rows import TEXT_SCHEMA, completion_tokens, is_text_store
from retort.errors import StoreError

log = logging.getLogger(__name__)
FORMAT = "retort-store"
VERSION = 1
CODEC = "plain-int32-f32"  # top-k ids as int32, logprobs as float32
CODECS = {"plain": CODEC, "q8": codec.NAME}  # the --codec choices → stored codec names
DICTIONARY_KEY = b"retort.topk_dictionary"  # shard metadata of the q8 codecs
TOPK_COLUMNS = ("topk_ids", "topk_logprobs")

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("prompt", pa.string()),  # text, or chat messages as JSON
        ("system", pa.string()),
        ("reference", pa.string()),
        ("completion", pa.string()),
        ("finish_reason", pa.string()),
        ("prompt_token_ids", pa.list_(pa.int32())),
        ("completion_token_ids", pa.list_(pa.int32())),
        ("topk_ids", pa.list_(pa.list_(pa.int32()))),  # (completion_len, k)
        ("topk_logprobs", pa.list_(pa.list_(pa.float32()))),  # (completion_len, k)
        ("usage", pa.struct([("prompt_tokens", pa.int32()), ("completion_tokens", pa.int32())])),
        ("latency_ms", pa.float32()),
    ]
)


# The q8 codecs store each row's top-k as two binary blobs (see codec.py).
SCHEMA_Q8 = pa.schema(
    [
        pa.field(name, pa.binary()) if name in TOPK_COLUMNS else SCHEMA.field(name)
        for name in SCHEMA.names
    ]
)


class Store:
    """A store directory opened for reading, or for appending under one fingerprint."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest

    @property
    def shards_dir(self) -> Path:
        return self.path / "shards"

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self.manifest["fingerprint"]

    @property
    def codec(self) -> str:
        return self.fingerprint.get("codec", CODEC)

    @property
    def is_text(self) -> bool:
        """A text teacher's store: text and token strings, no token ids (text_rows.py)."""
        return is_text_store(self.fingerprint)

    @property
    def schema(self) -> pa.Schema:
        """The row schema as readers see it (top-k decoded)."""
        return TEXT_SCHEMA if self.is_text else SCHEMA

    def require_token_ids(self, what: str) -> None:
        """Refuse a text store where ``what`` needs the teacher's token ids."""
        if self.is_text:
            raise StoreError(
                f"{self.path}: a text store (captured without a tokenizer) holds no token ids, "
                f"which {what} needs; capture with the teacher's --tokenizer"
            )

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open an existing store for reading."""
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise StoreError(
                f"{path}: not a store (no manifest.json); make one with retort generate"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            raise StoreError(f"{manifest_path}: manifest is not valid JSON") from None
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise StoreError(
                f"{manifest_path}: format {manifest.get('format')} v{manifest.get('version')}; "
                f"this retort reads {FORMAT} v{VERSION}"
            )
        store = cls(path, manifest)
        if store.codec == codec.V1:
            log.warning(
                "%s: top-k codec %s can decode peaked positions with more than all the "
                "teacher's mass (no tail left for KD); capture again with --codec q8 for %s",
                path,
                codec.V1,
                codec.NAME,
            )
        return store

    @classmethod
    def create_or_resume(cls, path: Path, fingerprint: dict[str, Any]) -> Store:
        """Open ``path`` for appending; refuse it if it was made under another fingerprint."""
        path = Path(path)
        if (path / "manifest.json").exists():
            store = cls.open(path)
            differences = describe_differences(store.fingerprint, fingerprint)
            if differences and store.codec == codec.V1:
                raise StoreError(
                    f"{path}: store was written with codec {codec.V1}, which this retort reads "
                    "but no longer writes; use a new --out"
                )
            if differences:
                raise StoreError(
                    f"{path}: store was made with different settings ({differences}); "
                    "use a new --out, or the store's original settings"
                )
            store._remove_partial_shards()
            return store
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path}: is a file; give a folder for the store")
        # An empty shards/ alone is what a run killed while creating the store leaves.
        leftovers = [p for p in path.iterdir() if p.name != "shards"] if path.exists() else []
        shards = path / "shards"
        if leftovers or (shards.is_dir() and any(shards.iterdir())):
            raise StoreError(f"{path}: folder exists and is not a store; choose another --out")
        now = _now()
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "fingerprint": fingerprint,
            "counts": {"rows": 0, "completion_tokens": 0, "shards": 0},
            "failures": [],
            "created": now,
            "updated": now,
        }
        (path / "shards").mkdir(parents=True, exist_ok=True)
        store = cls(path, manifest)
        store._write_manifest()
        return store

    def shard_paths(self) -> list[Path]:
        return sorted(self.shards_dir.glob("*.parquet"))

    def done_ids(self) -> set[str]:
        """Ids of every row already stored."""
        ids: set[str] = set()
        for shard in self.shard_paths():
            ids.update(pq.read_table(shard, columns=["id"]).column("id").to_pylist())
        return ids

    def append(self, rows: list[dict[str, Any]]) -> Path:
        """Write ``rows`` as one new shard: a temporary file, then an atomic rename."""
        table = self._encode(rows)
        name = f"part-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        partial = self.shards_dir / f".{name}.partial"
        pq.write_table(table, partial, compression="zstd")
        with partial.open("rb") as handle:  # the bytes reach the disk before the name does
            os.fsync(handle.fileno())
        final = self.shards_dir / name
        partial.rename(final)
        counts = self.manifest["counts"]
        counts["rows"] += len(rows)
        counts["completion_tokens"] += sum(self._completion_tokens(r) for r in rows)
        counts["shards"] += 1
        self._write_manifest()
        return final

    def record_failures(self, failures: list[dict[str, Any]]) -> None:
        """Replace the failure list with this run's (id, reason, attempts) records."""
        self.manifest["failures"] = failures
        self._write_manifest()

    def read_table(self, columns: list[str] | None = None) -> pa.Table:
        """All rows as one Arrow table, each id once (the first shard that holds it wins)."""
        shards = self.shard_paths()
        if not shards:
            empty = self.schema.empty_table()
            return empty.select(columns) if columns else empty
        table = pa.concat_tables(self._read_shard(s, columns) for s in shards)
        ids = table.column("id").to_pylist() if "id" in table.column_names else None
        if ids is not None and len(set(ids)) != len(ids):
            seen: set[str] = set()
            keep = [not (i in seen or seen.add(i)) for i in ids]
            table = table.filter(pa.array(keep))
        return table

    def rows(self) -> Iterator[dict[str, Any]]:
        yield from self.read_table().to_pylist()

    def recount(self) -> dict[str, int]:
        """Counts read from the shards themselves (the manifest's can lag a killed run)."""
        if self.is_text:
            rows = self.read_table(["id", "tokens", "usage"]).to_pylist()
            return {
                "rows": len(rows),
                "completion_tokens": sum(completion_tokens(r) for r in rows),
                "shards": len(self.shard_paths()),
            }
        table = self.read_table(["id", "completion_token_ids"])
        lengths = table.column("completion_token_ids").combine_chunks().value_lengths()
        return {
            "rows": table.num_rows,
            "completion_tokens": int(pc.sum(lengths).as_py() or 0),
            "shards": len(self.shard_paths()),
        }

    def _completion_tokens(self, row: dict[str, Any]) -> int:
        return completion_tokens(row) if self.is_text else len(row["completion_token_ids"])

    def _encode(self, rows: list[dict[str, Any]]) -> pa.Table:
        if self.is_text:
            return pa.Table.from_pylist(rows, schema=TEXT_SCHEMA)
        if self.codec == codec.V1:
            raise StoreError(
                f"{self.path}: codec {codec.V1} is read, never written; use a new --out"
            )
        if self.codec != codec.NAME:
            return pa.Table.from_pylist(rows, schema=SCHEMA)
        dictionary = codec.build_dictionary([r["topk_ids"] or [] for r in rows])
        k = int(self.fingerprint.get("top_k") or 0) or None
        packed = []
        for row in rows:
            try:
                ids, logprobs = codec.encode_row(
                    row["topk_ids"] or [], row["topk_logprobs"] or [], dictionary, k
                )
            except ValueError as exc:
                raise StoreError(f"{self.path}: row {row['id']}: {exc}") from None
            packed.append({**row, "topk_ids": ids, "topk_logprobs": logprobs})
        metadata = {DICTIONARY_KEY: codec.pack_dictionary(dictionary)}
        return pa.Table.from_pylist(packed, schema=SCHEMA_Q8.with_metadata(metadata))

    def _read_shard(self, shard: Path, columns: list[str] | None) -> pa.Table:
        """One shard with the plain schema, top-k decoded when the codec packed it."""
        if self.is_text:
            return pq.read_table(shard, columns=columns, schema=TEXT_SCHEMA)
        if self.codec not in codec.NAMES:
            return pq.read_table(shard, columns=columns, schema=SCHEMA)
        wanted = columns or SCHEMA.names
        if not any(c in TOPK_COLUMNS for c in wanted):
            return pq.read_table(shard, columns=wanted, schema=SCHEMA_Q8)
        needed = list(dict.fromkeys([*wanted, *TOPK_COLUMNS, "completion_token_ids"]))
        table = pq.read_table(shard, columns=needed, schema=SCHEMA_Q8)
        metadata = pq.read_schema(shard).metadata or {}
        dictionary = codec.unpack_dictionary(metadata.get(DICTIONARY_KEY, b""))
        k = int(self.fingerprint.get("top_k") or 0)
        decoded_ids, decoded_logprobs = [], []
        for id_blob, lp_blob, completion in zip(
            table.column("topk_ids").to_pylist(),
            table.column("topk_logprobs").to_pylist(),
            table.column("completion_token_ids").to_pylist(),
            strict=True,
        ):
            positions = len(completion) if id_blob else 0
            ids, logprobs = codec.decode_row(id_blob, lp_blob, positions, k, dictionary, self.codec)
            decoded_ids.append(ids)
            decoded_logprobs.append(logprobs)
        columns_out = {name: table.column(name) for name in wanted if name not in TOPK_COLUMNS}
        columns_out["topk_ids"] = pa.array(decoded_ids, SCHEMA.field("topk_ids").type)
        columns_out["topk_logprobs"] = pa.array(
            decoded_logprobs, SCHEMA.field("topk_logprobs").type
        )
        return pa.table({name: columns_out[name] for name in wanted})

    def _remove_partial_shards(self) -> None:
        # Left by a run killed mid-write; their rows were never counted as done.
        for partial in self.shards_dir.glob(".*.partial"):
            partial.unlink(missing_ok=True)
        self.manifest["counts"] = self.recount()

    def _write_manifest(self) -> None:
        self.manifest["updated"] = _now()
        target = self.path / "manifest.json"
        partial = self.path / ".manifest.json.partial"
        partial.write_text(json.dumps(self.manifest, indent=2, sort_keys=False) + "\n")
        partial.replace(target)


class ShardBuffer:
    """Rows waiting to become a shard: ``add`` writes a shard every ``rows_per_shard`` rows,
    ``flush`` writes the rest. Rows leave the buffer before the write, so a Ctrl-C inside one
    can never make a later flush write them a second time."""

    def __init__(self, store: Store, rows_per_shard: int) -> None:
        self.store, self.rows_per_shard = store, rows_per_shard
        self.pending: list[dict[str, Any]] = []
        self.written = 0

    def add(self, row: dict[str, Any]) -> None:
        self.pending.append(row)
        if len(self.pending) >= self.rows_per_shard:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            rows, self.pending = self.pending, []
            self.store.append(rows)
            self.written += len(rows)


def describe_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> str:
    """``"temperature 0.0 → 0.7, top_k 20 → 5"`` for the keys whose values differ."""
    parts = []
    for key in sorted(set(stored) | set(wanted)):
        if stored.get(key) != wanted.get(key):
            parts.append(f"{key} {_short(stored.get(key))} → {_short(wanted.get(key))}")
    return ", ".join(parts)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
