"""Sequence-level KD from a text store (issue 13, part 2): `--objective sft` tokenizes the
teacher's messages and text with the *student's* tokenizer and chat template, end of turn
included after a stop, prompt masked; objectives that need the teacher's token ids or logits
refuse a text store in one line."""

from __future__ import annotations

import json

import pytest
import torch

from retort.capture.runner import generate
from retort.config import DistillConfig, GenerateConfig
from retort.errors import StoreError
from retort.models.loading import load_model, load_tokenizer, resolve
from retort.teachers.chat import render_prompt
from retort.train.data import IGNORE, examples_from_rows
from retort.train.loop import distill
from retort.train.setup import assemble
from tests.cli.test_errors import assert_one_line_error
from tests.conftest import PROMPTS, write_jsonl
from tests.servers import FaultServer

ANSWER = "Sure: the answer is yes."
CUT = "Well, first of all"  # a reply cut by the length cap


def teacher_reply(body: dict) -> dict:
    """A hosted teacher's chat reply: prompts asking a question (a '?') are cut by the length
    cap, the rest end their turn with ANSWER."""
    question = "?" in body["messages"][-1]["content"]
    choice = {
        "index": 0,
        "message": {"content": CUT if question else ANSWER},
        "finish_reason": "length" if question else "stop",
    }
    return {"choices": [choice], "usage": {"prompt_tokens": 9, "completion_tokens": 6}}


@pytest.fixture(scope="module")
def text_store(tmp_path_factory):
    """A text store of 16 built-in prompts, captured without a tokenizer."""
    folder = tmp_path_factory.mktemp("text-store")
    records = [json.loads(line) for line in PROMPTS.read_text().splitlines()[:16]]
    prompts = write_jsonl(folder / "prompts.jsonl", records)
    with FaultServer(lambda body: ("ok", teacher_reply(body))) as url:
        config = GenerateConfig(
            teacher=url,
            teacher_model="tiny",
            endpoint="chat",
            prompts=prompts,
            out=folder / "store",
            top_k=0,
            max_new_tokens=16,
        )
        result = generate(config)
    assert result.written == 16 and result.store.is_text
    return folder / "store"


def sft(data, student, out, **overrides) -> DistillConfig:
    values = {
        "data": data,
        "out": out,
        "student": str(student),
        "objective": "sft",
        "max_steps": 4,
        "batch_size": 16,
        "learning_rate": 1e-2,
        "warmup_steps": 1,
        **overrides,
    }
    return DistillConfig(**values)


@pytest.mark.parametrize("student", ["tiny_model_dir", "other_tokenizer_model_dir"])
def test_text_rows_become_the_students_tokens_with_its_end_of_turn_after_a_stop(
    student, text_store, tmp_path, request
):
    folder = request.getfixturevalue(student)
    tokenizer = load_tokenizer(resolve(str(folder)))
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    parts = assemble(sft(text_store, folder, tmp_path / "run"))
    assert parts.top_k == 0 and len(parts.rows) == 16
    stops = 0
    for row, example in zip(parts.rows, examples_from_rows(parts.rows, 512), strict=True):
        prompt = render_prompt(tokenizer, json.loads(row["messages"]))
        text = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
        stopped = row["finish_reason"] == "stop"
        stops += stopped
        completion = [*text, end] if stopped else text
        assert row["prompt_token_ids"] == prompt
        assert row["completion_token_ids"] == completion
        assert example.input_ids == prompt + completion
        assert example.labels == [IGNORE] * len(prompt) + completion  # the prompt is masked
    assert 0 < stops < 16  # both kinds of reply are in the store


def test_sft_on_a_text_store_teaches_a_student_of_another_tokenizer_to_answer_and_stop(
    text_store, other_tokenizer_model_dir, tmp_path
):
    result = distill(sft(text_store, other_tokenizer_model_dir, tmp_path / "run", max_steps=40))
    losses = [json.loads(line)["loss"] for line in (result.run_dir / "metrics.jsonl").open()]
    assert losses[-1] < losses[0] * 0.2
    tokenizer = load_tokenizer(resolve(str(other_tokenizer_model_dir)))
    student = load_model(resolve(str(result.final_dir))).eval()
    prompt = render_prompt(tokenizer, [{"role": "user", "content": "Name a colour."}])
    with torch.no_grad():
        written = student.generate(
            torch.tensor([prompt]),
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tokenizer.pad_token_id,
        )[0, len(prompt) :].tolist()
    # The teacher's text, then the student's own end-of-turn token: it learned to stop.
    assert tokenizer.decode(written[:-1]) == ANSWER
    assert written[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")


@pytest.mark.parametrize(
    "overrides",
    [
        {"objective": "topk"},
        {"objective": "online", "teacher": "TEACHER"},
        {"objective": "on_policy", "teacher": "TEACHER"},
        {"objective": "sft", "teacher": "TEACHER", "hidden_weight": 1.0},
        {"objective": "cross_tokenizer"},  # this store was captured without top-k
    ],
    ids=["topk", "online", "on_policy", "hidden", "cross_tokenizer_without_topk"],
)
def test_objectives_that_need_teacher_tokens_refuse_a_text_store_before_the_run_folder(
    overrides, text_store, tiny_model_dir, tmp_path
):
    if overrides.get("teacher") == "TEACHER":
        overrides = {**overrides, "teacher": str(tiny_model_dir)}
    config = sft(text_store, tiny_model_dir, tmp_path / "run", **overrides)
    with pytest.raises(StoreError) as refusal:
        distill(config)
    message = str(refusal.value)
    assert str(text_store) in message and "text store" in message and "\n" not in message
    if "hidden_weight" in overrides:
        assert "drop --hidden-weight" in message
    else:
        assert "use --objective sft" in message
    assert not (tmp_path / "run").exists()


def test_the_topk_refusal_of_a_text_store_is_one_line_at_the_command_line(
    cli, text_store, tiny_model_dir, tmp_path
):
    code, err = cli(
        "distill", "--data", text_store, "--out", tmp_path / "run", "--student", tiny_model_dir,
        "--objective", "topk",
    )  # fmt: skip
    assert_one_line_error(code, err, str(text_store), "use --objective sft")


def test_eval_refuses_a_text_store_in_one_line(cli, text_store, tiny_model_dir):
    code, err = cli(
        "eval", "--teacher", tiny_model_dir, "--data", text_store, "--student", tiny_model_dir
    )
    assert_one_line_error(code, err, "a text store", "capture with the teacher's --tokenizer")


def test_a_text_store_calibrates_an_importance_pruned_student_in_the_teachers_tokens(
    text_store, tiny_model_dir, tmp_path
):
    config = sft(
        text_store,
        "prune:2:importance",
        tmp_path / "run",
        teacher=str(tiny_model_dir),
        prune_calibration=5,
        max_steps=1,
    )
    run = distill(config).run_dir
    kept = json.loads((run / "pruned.json").read_text())
    assert kept["spec"] == "prune:2:importance" and len(kept["layers"]) == 2
