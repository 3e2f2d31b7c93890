"""`--objective cross_tokenizer --live-top-k K`: a local teacher of another tokenizer scores
each batch in its own tokens, so a text store without any teacher logprobs distills too."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from retort.config import DistillConfig
from retort.crosstok.live import LiveTeacherTargets
from retort.crosstok.vocab_bytes import vocab_bytes
from retort.errors import ConfigError
from retort.models.loading import load_tokenizer, resolve
from retort.teachers.chat import render_prompt
from retort.teachers.local import LocalTeacher
from retort.train.loop import distill
from retort.train.text_store import rows_in_student_tokens
from tests.cli.test_errors import assert_one_line_error
from tests.train.test_loop import StopAt, metrics
from tests.train.test_text_store import sft, text_store  # noqa: F401 (a fixture)


def live(data, student, teacher, out, **overrides):
    settings = {
        "objective": "cross_tokenizer",
        "teacher": str(teacher),
        "live_top_k": 8,
        "ce_weight": 0.0,
        "max_steps": 6,
        "batch_size": 8,
        "save_every": 100,
    }
    return sft(data, student, out, **(settings | overrides))


def test_the_live_teacher_gives_each_completion_token_its_logprob_and_top_k_of_a_full_forward(
    text_store,  # noqa: F811
    tiny_model_dir,
    other_tokenizer_model_dir,
):
    from retort.capture.store import Store

    teacher = LocalTeacher.load(str(tiny_model_dir))
    student_tokenizer = load_tokenizer(resolve(str(other_tokenizer_model_dir)))
    rows = Store.open(text_store).read_table().to_pylist()[:3]
    rows = rows_in_student_tokens(rows, student_tokenizer, text_store)
    scorer = LiveTeacherTargets.of(teacher.model, teacher.tokenizer, student_tokenizer, top_k=5)
    table = vocab_bytes(teacher.tokenizer).table
    for row in rows:
        got = scorer.teacher_tokens(row)
        prompt = render_prompt(teacher.tokenizer, json.loads(row["messages"]))
        completion = teacher.tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = teacher.model(input_ids=torch.tensor([prompt + completion])).logits[0]
        expected = logits[len(prompt) - 1 : -1].float().log_softmax(-1)  # predicts each token
        assert b"".join(got.pieces) == row["completion"].encode()
        want = expected.gather(-1, torch.tensor(completion)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(got.logprobs), want, atol=1e-5)
        for position, entries in enumerate(got.topk):
            values, ids = expected[position].topk(5)
            pairs = zip(ids.tolist(), values.tolist(), strict=True)
            listed = [(table[i], v) for i, v in pairs if table[i]]
            assert [piece for piece, _ in entries] == [piece for piece, _ in listed]
            assert [lp for _, lp in entries] == pytest.approx([lp for _, lp in listed], abs=1e-5)
    # and the targets on the student's positions are the store path's, from those tokens
    scored = scorer.scored(rows)
    assert all(len(r["topk_ids"]) == len(r["completion_token_ids"]) for r in scored)
    assert scorer.counts.matched + scorer.counts.uld > 0


def test_a_text_store_without_logprobs_distills_through_a_live_teacher_and_resumes_exactly(
    text_store,  # noqa: F811
    tiny_model_dir,
    other_tokenizer_model_dir,
    tmp_path,
):
    config = live(text_store, other_tokenizer_model_dir, tiny_model_dir, tmp_path / "a")
    straight = metrics(distill(config).run_dir)
    train = [r for r in straight if "kd" in r]
    assert all("uld" in r for r in train) and train[-1]["kd"] < train[0]["kd"]
    stopped = live(text_store, other_tokenizer_model_dir, tiny_model_dir, tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        distill(stopped, progress=StopAt(3))
    resumed = metrics(distill(stopped, resume=True).run_dir)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]


def test_live_top_k_is_refused_where_it_cannot_apply(
    cli,
    text_store,  # noqa: F811
    tiny_model_dir,
    other_tokenizer_model_dir,
    tmp_path,
):
    base = {"data": text_store, "out": tmp_path / "run", "student": "x", "live_top_k": 8}
    with pytest.raises(ValidationError, match="live_top_k: only for objective cross_tokenizer"):
        DistillConfig(**base, objective="online", teacher=str(tiny_model_dir))
    with pytest.raises(ValidationError, match="teacher: required by live_top_k"):
        DistillConfig(**base, objective="cross_tokenizer")
    with pytest.raises(ValidationError, match="needs a local teacher"):
        DistillConfig(**base, objective="cross_tokenizer", teacher="http://127.0.0.1:9/v1")
    sharded = live(text_store, other_tokenizer_model_dir, tiny_model_dir, tmp_path / "run")
    with pytest.raises(ConfigError, match="live cross-tokenizer teacher"):
        distill(sharded.model_copy(update={"fsdp": ["teacher"]}))
    # without it, a text store with no top-k says the live teacher is a way
    code, err = cli(
        "distill", "--data", text_store, "--out", tmp_path / "c", "--student",
        other_tokenizer_model_dir, "--objective", "cross_tokenizer",
    )  # fmt: skip
    assert_one_line_error(code, err, str(text_store), "--live-top-k")
    assert not (tmp_path / "run").exists() and not (tmp_path / "c").exists()
