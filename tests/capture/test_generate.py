"""Capture from a real (tiny) local teacher: alignment of top-k, resume, interruption."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from retort.capture.runner import generate
from retort.capture.store import Store
from retort.config import GenerateConfig
from retort.errors import StoreError
from retort.teachers.local import LocalTeacher


def config(tiny_model_dir, prompts_file, out, **overrides) -> GenerateConfig:
    values = {
        "teacher": str(tiny_model_dir),
        "prompts": prompts_file,
        "out": out,
        "top_k": 5,
        "max_new_tokens": 6,
        "batch_size": 4,
        **overrides,
    }
    return GenerateConfig(**values)


def test_greedy_tokens_are_the_top_1_of_their_stored_distribution(
    tiny_model_dir, prompts_file, tmp_path
):
    result = generate(config(tiny_model_dir, prompts_file, tmp_path / "s"))
    rows = list(result.store.rows())
    assert len(rows) == 12 and result.written == 12
    for row in rows:
        assert len(row["topk_ids"]) == len(row["completion_token_ids"]) > 0
        for token, ids, logprobs in zip(
            row["completion_token_ids"], row["topk_ids"], row["topk_logprobs"], strict=True
        ):
            assert ids[0] == token
            assert logprobs == sorted(logprobs, reverse=True) and len(ids) == 5
        assert row["finish_reason"] in {"stop", "length"}
        assert row["usage"]["completion_tokens"] == len(row["completion_token_ids"])


def test_a_second_run_generates_nothing_again(tiny_model_dir, prompts_file, tmp_path):
    generate(config(tiny_model_dir, prompts_file, tmp_path / "s"))
    again = generate(config(tiny_model_dir, prompts_file, tmp_path / "s"))
    assert (again.written, again.skipped) == (0, 12)


def test_different_sampling_settings_are_refused(tiny_model_dir, prompts_file, tmp_path):
    generate(config(tiny_model_dir, prompts_file, tmp_path / "s"))
    with pytest.raises(StoreError, match="top_k 5 → 3"):
        generate(config(tiny_model_dir, prompts_file, tmp_path / "s", top_k=3))


class InterruptAfter:
    """A real teacher that raises KeyboardInterrupt (Ctrl-C) after ``batches`` batches."""

    def __init__(self, teacher: LocalTeacher, batches: int) -> None:
        self.inner, self.left = teacher, batches
        self.capabilities, self.tokenizer = teacher.capabilities, teacher.tokenizer

    def identity(self):
        return self.inner.identity()

    def generate(self, prompts, sampling, top_k):
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return self.inner.generate(prompts, sampling, top_k)


def test_ctrl_c_keeps_finished_rows_and_the_rerun_completes_exactly_once(
    tiny_model_dir, prompts_file, tmp_path
):
    teacher = LocalTeacher.load(str(tiny_model_dir))
    settings = config(tiny_model_dir, prompts_file, tmp_path / "s", rows_per_shard=100)
    with pytest.raises(KeyboardInterrupt):
        generate(settings, teacher=InterruptAfter(teacher, batches=2))
    assert len(Store.open(tmp_path / "s").done_ids()) == 8
    generate(settings, teacher=teacher)
    store = Store.open(tmp_path / "s")
    ids = [i for shard in store.shard_paths() for i in pq.read_table(shard)["id"].to_pylist()]
    expected = [json.loads(line)["id"] for line in prompts_file.read_text().splitlines()]
    assert sorted(ids) == sorted(expected)


def test_a_sampled_row_is_the_same_whatever_batch_it_falls_in(
    tiny_model_dir, prompts_file, tmp_path
):
    # The same prompt under two ids gets two samples, and each row's sample depends on its id
    # only: batch size (or a resume that batches differently) changes nothing.
    records = [json.loads(line) for line in prompts_file.read_text().splitlines()]
    twice = [{**records[0], "id": "a"}, {**records[0], "id": "b"}, *records[1:6]]
    prompts = tmp_path / "twice.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in twice))

    def completions(out, batch_size):
        settings = config(
            tiny_model_dir, prompts, out, temperature=1.0, max_new_tokens=8, batch_size=batch_size
        )
        rows = generate(settings).store.rows()
        return {r["id"]: r["completion_token_ids"] for r in rows}

    one, four = completions(tmp_path / "b1", 1), completions(tmp_path / "b4", 4)
    assert one == four
    assert one["a"] != one["b"]
