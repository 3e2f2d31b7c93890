"""Score mode: the teacher's top-k logprobs of existing text, teacher-forced."""

from __future__ import annotations

import json

import pytest

from retort.capture.runner import generate
from retort.config import GenerateConfig
from retort.errors import InputError, TeacherError
from tests.conftest import assert_same_capture, write_jsonl
from tests.servers import FaultServer


def test_scoring_the_teachers_own_greedy_answers_reproduces_their_top_k(
    tiny_model_dir, prompts_file, tmp_path
):
    written = generate(
        GenerateConfig(
            teacher=str(tiny_model_dir),
            prompts=prompts_file,
            out=tmp_path / "gen",
            top_k=4,
            max_new_tokens=8,
        )
    )
    rows = [r for r in written.store.rows() if r["finish_reason"] == "stop"] or list(
        written.store.rows()
    )
    records = [
        {"id": r["id"], "prompt": json.loads(line)["prompt"], "completion": r["completion"]}
        for r in rows
        for line in prompts_file.read_text().splitlines()
        if json.loads(line)["id"] == r["id"]
    ]
    scored = generate(
        GenerateConfig(
            teacher=str(tiny_model_dir),
            mode="score",
            prompts=write_jsonl(tmp_path / "s.jsonl", records),
            out=tmp_path / "score",
            top_k=4,
            batch_size=3,
        )
    )
    assert scored.store.fingerprint["mode"] == "score"
    by_id = {r["id"]: r for r in rows}
    compared = 0
    for row in scored.store.rows():
        original = by_id[row["id"]]
        n = len(original["completion_token_ids"])
        if row["completion_token_ids"][:n] != original["completion_token_ids"]:
            continue  # the text re-tokenized differently: positions are not comparable
        compared += 1
        assert row["finish_reason"] == "scored"
        assert row["topk_ids"][:n] == original["topk_ids"]
        for got, want in zip(row["topk_logprobs"][:n], original["topk_logprobs"], strict=True):
            assert got == pytest.approx(want, abs=1e-4)
    assert compared >= len(rows) // 2


def test_score_mode_over_http_equals_local(tiny_server, tiny_model_dir, tmp_path):
    records = [
        {"id": "a", "prompt": "Say hello.", "completion": "Hello there, friend."},
        {"id": "b", "prompt": "Name a fruit.", "completion": "An apple."},
    ]
    prompts = write_jsonl(tmp_path / "p.jsonl", records)
    local = generate(
        GenerateConfig(
            teacher=str(tiny_model_dir),
            mode="score",
            prompts=prompts,
            out=tmp_path / "local",
            top_k=3,
        )
    )
    served = generate(
        GenerateConfig(
            teacher=tiny_server,
            teacher_model="tiny",
            tokenizer=str(tiny_model_dir),
            mode="score",
            prompts=prompts,
            out=tmp_path / "http",
            top_k=3,
        )
    )
    assert served.written == 2 and not served.failures
    assert_same_capture(served.store, local.store)


def test_a_record_without_completion_is_named_before_any_store(tiny_model_dir, tmp_path):
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": "x", "completion": "y"}, {"prompt": "z"}]
    )
    with pytest.raises(InputError, match=r'p\.jsonl:2: score mode needs a non-empty "completion"'):
        generate(
            GenerateConfig(
                teacher=str(tiny_model_dir), mode="score", prompts=prompts, out=tmp_path / "s"
            )
        )
    assert not (tmp_path / "s").exists()


def test_a_server_without_prompt_logprobs_is_refused_up_front(tiny_model_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x", "completion": "y"}])
    plain = {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}
    with (
        FaultServer(lambda body: ("ok", plain)) as url,
        pytest.raises(TeacherError, match="score mode needs vLLM's prompt_logprobs"),
    ):
        generate(
            GenerateConfig(
                teacher=url,
                teacher_model="tiny",
                tokenizer=str(tiny_model_dir),
                mode="score",
                prompts=prompts,
                out=tmp_path / "s",
            )
        )
