"""`--objective cross_tokenizer` end to end: a hosted teacher with Gemma 3's tokenizer (its real
tokens and bytes, served with top_logprobs as OpenAI sends them) captured into a text store
without a tokenizer, distilled into a student of another tokenizer."""

from __future__ import annotations

import json
import logging
import math

import pytest

from retort.capture.runner import generate
from retort.config import DistillConfig, GenerateConfig
from retort.crosstok.vocab_bytes import vocab_bytes
from retort.errors import ModelError, StoreError
from retort.train.loop import distill
from tests.cli.test_errors import assert_one_line_error
from tests.conftest import PROMPTS, write_jsonl
from tests.servers import FaultServer
from tests.train.test_text_store import sft

ANSWER = "The capital of France is Paris, and 12 + 30 = 42."
ALTERNATIVES = ("▁the", "▁a", ".", "▁Paris")  # other tokens the teacher spreads mass on


def hosted_reply(tokenizer, table):
    """A chat reply with Gemma 3's tokens of ANSWER: each chosen with probability 0.6, the
    rest spread over ALTERNATIVES."""
    ids = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    others = [tokenizer.convert_tokens_to_ids(t) for t in ALTERNATIVES]

    def entry(token_id, logprob):
        piece = table.table[token_id]
        return {"token": piece.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(piece)}

    content = []
    for token_id in ids:
        rest = [o for o in others if o != token_id][:3]
        top = [entry(token_id, math.log(0.6))] + [entry(o, math.log(0.1)) for o in rest]
        content.append({**entry(token_id, math.log(0.6)), "top_logprobs": top})
    choice = {
        "index": 0,
        "message": {"content": ANSWER},
        "finish_reason": "stop",
        "logprobs": {"content": content},
    }
    return {"choices": [choice], "usage": {"prompt_tokens": 9, "completion_tokens": len(ids)}}


def hosted_store(folder, records, gemma_tokenizer):
    """A text store of ``records`` captured from a hosted teacher that answers ANSWER."""
    prompts = write_jsonl(folder / "prompts.jsonl", records)
    reply = hosted_reply(gemma_tokenizer, vocab_bytes(gemma_tokenizer))
    with FaultServer(lambda body: ("ok", reply)) as url:
        config = GenerateConfig(
            teacher=url,
            teacher_model="tiny",  # the name FaultServer serves
            endpoint="chat",
            prompts=prompts,
            out=folder / "store",
            top_k=4,
            max_new_tokens=32,
        )
        result = generate(config)
    assert result.written == len(records) and result.store.is_text
    return folder / "store"


@pytest.fixture(scope="module")
def gemma_text_store(tmp_path_factory, gemma_tokenizer):
    records = [json.loads(line) for line in PROMPTS.read_text().splitlines()[:8]]
    return hosted_store(tmp_path_factory.mktemp("gemma-text-store"), records, gemma_tokenizer)


def cross(data, student, out, **overrides) -> DistillConfig:
    settings = {"objective": "cross_tokenizer", "max_steps": 30, "batch_size": 8}
    return sft(data, student, out, **(settings | overrides))


def test_a_student_of_another_tokenizer_learns_the_teachers_distribution_through_bytes(
    gemma_text_store, other_tokenizer_model_dir, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="retort.train.text_store")
    result = distill(cross(gemma_text_store, other_tokenizer_model_dir, tmp_path / "run"))
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    train = [r for r in records if r.get("split") != "eval" and "kd" in r]
    assert all("uld" in r for r in train)  # both parts are there: matched tokens and groups
    assert train[-1]["kd"] < train[0]["kd"] * 0.5
    assert train[-1]["uld"] < train[0]["uld"]
    assert "match a teacher token one to one" in caplog.text


def test_text_store_objectives_refuse_in_one_line_naming_what_works(
    cli, gemma_text_store, other_tokenizer_model_dir, tiny_store, tiny_model_dir, tmp_path
):
    # a text store with top-k: topk is refused, naming cross_tokenizer
    code, err = cli(
        "distill", "--data", gemma_text_store, "--out", tmp_path / "a", "--student",
        other_tokenizer_model_dir, "--objective", "topk",
    )  # fmt: skip
    assert_one_line_error(code, err, str(gemma_text_store), "--objective cross_tokenizer")
    # a token store: cross_tokenizer is refused, naming topk
    with pytest.raises(StoreError, match="--objective topk") as refusal:
        distill(cross(tiny_store, tiny_model_dir, tmp_path / "b"))
    assert "\n" not in str(refusal.value)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_local_teachers_token_store_distills_into_another_tokenizer_through_its_bytes(
    tiny_store, tiny_model_dir, other_tokenizer_model_dir, tmp_path
):
    """A token store (a local teacher's ids) with --teacher: the teacher's tokenizer turns its
    ids and top-k into bytes, then the same alignment as for a hosted teacher."""
    config = cross(
        tiny_store, other_tokenizer_model_dir, tmp_path / "run", teacher=str(tiny_model_dir)
    )
    result = distill(config)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    train = [r for r in records if "kd" in r]
    assert train[-1]["kd"] < train[0]["kd"]
    # the teacher named must be the one that made the store, whose tokenizer reads its ids
    wrong = {"teacher": str(other_tokenizer_model_dir)}
    with pytest.raises(StoreError, match="written by another teacher"):
        distill(cross(tiny_store, tiny_model_dir, tmp_path / "wrong", **wrong))
    anyway = cross(tiny_store, tiny_model_dir, tmp_path / "w2", **wrong, allow_other_teacher=True)
    with pytest.raises(ModelError, match="not the one that made"):
        distill(anyway)


def test_packed_cross_tokenizer_batches_give_the_padded_losses(
    gemma_tokenizer, other_tokenizer_model_dir, tmp_path
):
    # ULD groups point at positions inside their row: packing moves them with their example.
    # Short prompts beside long ones, so that batches of 4 do pack.
    long = [json.loads(line) for line in PROMPTS.read_text().splitlines()[:4]]
    short = [{"id": f"short-{i}", "prompt": word} for i, word in enumerate(("Hi", "Why?", "2+2"))]
    store = hosted_store(tmp_path, [*long, *short], gemma_tokenizer)
    logs = {}
    for pack in (True, False):
        config = cross(store, other_tokenizer_model_dir, tmp_path / f"{pack}", max_steps=4)
        run = distill(config.model_copy(update={"pack": pack, "batch_size": 4})).run_dir
        logs[pack] = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    for packed, padded in zip(logs[True], logs[False], strict=True):
        for name in ("loss", "kd", "uld", "ce"):
            assert packed[name] == pytest.approx(padded[name], rel=2e-5), name
    assert sum(r["padding"] for r in logs[True]) < sum(r["padding"] for r in logs[False])
