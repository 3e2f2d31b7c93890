"""The q8 top-k codec: exact ids, logprobs within the documented bound, a KD loss that barely
moves, and stores that read back as if they were plain (v2; v1 stores still read)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retort.capture import codec
from retort.capture.runner import generate
from retort.config import GenerateConfig
from retort.losses import sparse_divergence


def teacher_topk(positions: int, k: int, vocab: int = 5000, seed: int = 0):
    """Peaked next-token distributions like a real LM's (a few likely tokens, a long tail)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(positions, vocab, generator=g) * 3
    logits[:, :50] += 6 * torch.rand(positions, 50, generator=g)  # frequent tokens
    top = torch.log_softmax(logits, -1).topk(k)
    return top.indices.tolist(), top.values.tolist(), logits


def test_ids_round_trip_exactly_and_logprobs_stay_within_the_bound():
    ids, logprobs, _ = teacher_topk(200, 20)
    dictionary = codec.build_dictionary([ids[:100]])  # some ids fall outside it: escapes
    id_blob, lp_blob = codec.encode_row(ids, logprobs, dictionary)
    decoded_ids, decoded = codec.decode_row(id_blob, lp_blob, 200, 20, dictionary)
    assert decoded_ids == ids
    true, got = np.asarray(logprobs), np.asarray(decoded)
    kth_gap = true[:, :1] - true[:, -1:]  # all below codec.GAP_RANGE here: no escapes
    bound = kth_gap / codec.LEVELS * (1 + 2**-10) + 1e-6  # the step: gap rounding + rescaling
    assert (np.abs(got - true) <= bound).all()
    assert np.abs(got - true).mean() <= 0.01


def test_kd_loss_on_decoded_values_is_within_half_a_percent():
    ids, logprobs, _ = teacher_topk(300, 20, seed=1)
    dictionary = codec.build_dictionary([ids])
    decoded_ids, decoded = codec.decode_row(
        *codec.encode_row(ids, logprobs, dictionary), 300, 20, dictionary
    )
    student = torch.randn(300, 5000, generator=torch.Generator().manual_seed(2)) * 3
    raw = sparse_divergence(student, torch.tensor(ids), torch.tensor(logprobs))
    packed = sparse_divergence(student, torch.tensor(decoded_ids), torch.tensor(decoded))
    assert abs(packed.item() - raw.item()) / raw.item() < 0.005


def test_empty_rows_and_bad_blobs():
    assert codec.encode_row([], [], []) == (b"", b"")
    assert codec.decode_row(b"", b"", 0, 20, []) == ([], [])
    with pytest.raises(ValueError, match="holds 1 ids, expected 2"):
        codec.decode_row(b"\x01", b"\x00" * 8, 1, 2, [])


def test_a_q8_store_reads_back_like_a_plain_one(tiny_model_dir, prompts_file, tmp_path):
    common = {
        "teacher": str(tiny_model_dir),
        "prompts": prompts_file,
        "top_k": 6,
        "max_new_tokens": 8,
    }
    plain = generate(GenerateConfig(out=tmp_path / "plain", **common))
    packed = generate(GenerateConfig(out=tmp_path / "q8", codec="q8", **common))
    assert packed.store.fingerprint["codec"] == codec.NAME
    plain_rows = {r["id"]: r for r in plain.store.rows()}
    for row in packed.store.rows():
        twin = plain_rows[row["id"]]
        assert row["completion_token_ids"] == twin["completion_token_ids"]
        assert row["topk_ids"] == twin["topk_ids"]
        assert np.allclose(row["topk_logprobs"], twin["topk_logprobs"], atol=0.05)
    only_ids = packed.store.read_table(["id", "topk_ids"])
    assert only_ids.column_names == ["id", "topk_ids"]


def test_a_v1_store_still_reads(tmp_path):
    # A store written before v2 (top float16, step float16, uint8 gap deltas; no tail) keeps
    # reading as it always did.
    import pyarrow as pa
    import pyarrow.parquet as pq

    from retort.capture.store import DICTIONARY_KEY, SCHEMA_Q8, Store

    store = Store.create_or_resume(tmp_path / "s", {"codec": codec.V1, "top_k": 2})
    step = np.float16(1.0 / 255)
    lp_blob = np.float16(-0.5).tobytes() + step.tobytes() + np.array([0, 255], np.uint8).tobytes()
    row = {
        "id": "a",
        "prompt": "p",
        "completion": "c",
        "finish_reason": "length",
        "prompt_token_ids": [1],
        "completion_token_ids": [7],
        "topk_ids": codec.pack_dictionary([1, 0]),  # dictionary ranks 1, 0 → ids 9, 4
        "topk_logprobs": lp_blob,
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        "latency_ms": 0.0,
    }
    metadata = {DICTIONARY_KEY: codec.pack_dictionary([4, 9])}
    table = pa.Table.from_pylist([row], schema=SCHEMA_Q8.with_metadata(metadata))
    pq.write_table(table, store.shards_dir / "part-v1.parquet")
    (read,) = Store.open(tmp_path / "s").rows()
    assert read["topk_ids"] == [[9, 4]]
    assert read["topk_logprobs"][0] == pytest.approx([-0.5, -0.5 - 255 * float(step)], abs=1e-3)


def test_a_student_trains_on_a_q8_store(tiny_model_dir, prompts_file, tmp_path):
    from retort.config import DistillConfig
    from retort.train.loop import distill

    generate(
        GenerateConfig(
            teacher=str(tiny_model_dir),
            prompts=prompts_file,
            top_k=6,
            max_new_tokens=8,
            out=tmp_path / "q8",
            codec="q8",
        )
    )
    result = distill(
        DistillConfig(
            data=tmp_path / "q8",
            out=tmp_path / "run",
            student="prune:2",
            teacher=str(tiny_model_dir),
            max_steps=2,
            batch_size=4,
        )
    )
    assert result.steps == 2 and result.last_loss == result.last_loss  # not NaN
