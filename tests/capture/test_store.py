"""The store: whole shards, resume without duplicates, refusal of another fingerprint."""

from __future__ import annotations

import pytest

from retort.capture.store import Store
from retort.errors import StoreError

FINGERPRINT = {"teacher": "t", "top_k": 2, "temperature": 0.0}


def row(i: int) -> dict:
    return {
        "id": f"r{i}",
        "prompt": f"prompt {i}",
        "completion": "done",
        "finish_reason": "stop",
        "prompt_token_ids": [1, 2],
        "completion_token_ids": [3, 4, 5],
        "topk_ids": [[3, 9], [4, 9], [5, 9]],
        "topk_logprobs": [[-0.1, -2.5], [-0.2, -2.0], [-0.3, -1.5]],
        "usage": {"prompt_tokens": 2, "completion_tokens": 3},
        "latency_ms": 1.0,
    }


def test_rows_round_trip_and_counts(tmp_path):
    store = Store.create_or_resume(tmp_path / "s", FINGERPRINT)
    store.append([row(0), row(1)])
    store.append([row(2)])
    reopened = Store.open(tmp_path / "s")
    assert reopened.done_ids() == {"r0", "r1", "r2"}
    assert reopened.manifest["counts"] == {"rows": 3, "completion_tokens": 9, "shards": 2}
    first = next(r for r in reopened.rows() if r["id"] == "r0")
    assert first["topk_ids"] == [[3, 9], [4, 9], [5, 9]]
    assert first["topk_logprobs"][0] == pytest.approx([-0.1, -2.5])


def test_another_fingerprint_is_refused_and_the_difference_named(tmp_path):
    Store.create_or_resume(tmp_path / "s", FINGERPRINT).append([row(0)])
    with pytest.raises(StoreError, match=r"top_k 2 → 5"):
        Store.create_or_resume(tmp_path / "s", {**FINGERPRINT, "top_k": 5})
    assert Store.open(tmp_path / "s").done_ids() == {"r0"}  # nothing lost


def test_a_shard_half_written_by_a_killed_run_is_discarded_on_resume(tmp_path):
    store = Store.create_or_resume(tmp_path / "s", FINGERPRINT)
    store.append([row(0)])
    (store.shards_dir / ".part-killed.parquet.partial").write_bytes(b"PAR1 truncated")
    resumed = Store.create_or_resume(tmp_path / "s", FINGERPRINT)
    assert list(resumed.shards_dir.glob(".*partial")) == []
    assert resumed.done_ids() == {"r0"}


def test_a_folder_that_is_not_a_store_is_refused(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a store"):
        Store.create_or_resume(tmp_path / "s", FINGERPRINT)


def test_hugging_face_datasets_reads_the_shards(tmp_path):
    datasets = pytest.importorskip("datasets")
    store = Store.create_or_resume(tmp_path / "s", FINGERPRINT)
    store.append([row(0), row(1)])
    loaded = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "s" / "shards" / "*.parquet"), split="train"
    )
    assert sorted(loaded["id"]) == ["r0", "r1"]
