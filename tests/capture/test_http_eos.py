"""HTTP capture keeps the teacher's end token (issue 9, item 2).

Servers strip the end token from ``text`` (and OpenAI from ``logprobs.content``), so a row that
says ``finish_reason="stop"`` must get it back, or SFT students never learn to stop. A stop
caused by a stop *string* is not the model ending its turn and gets no end token.
"""

from __future__ import annotations

import json

import pytest
import torch

from retort.capture.runner import generate
from retort.config import GenerateConfig
from retort.teachers.http import HTTPTeacher, run_sync
from retort.teachers.protocol import Sampling
from tests.conftest import PROMPTS, build_tiny_model, save_model, write_jsonl
from tests.servers import FaultServer


@pytest.fixture(scope="module")
def stopping_model_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny teacher that ends some of its answers after a few tokens and runs on in others:
    its output row for the end token points along one of its own mid-answer hidden states."""
    from retort.teachers.chat import chat_messages, render_prompt

    tokenizer = tiny_tokenizer
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model = build_tiny_model(tokenizer)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().clone())
    records = [json.loads(line) for line in PROMPTS.read_text().splitlines()[:12]]
    with torch.no_grad():
        states = []
        for record in records:
            prompt = render_prompt(tokenizer, chat_messages(record["prompt"], None, None))
            written = model.generate(
                torch.tensor([prompt]), max_new_tokens=8, do_sample=False, pad_token_id=eos
            )
            out = model(written[:, :-1], output_hidden_states=True)
            states.append(out.hidden_states[-1][0, len(prompt) - 1 :])
        states = torch.cat(states)  # (12 * 8, H)
        direction = states[3] - states.mean(0)
        model.lm_head.weight[eos] = 1.0 * direction / direction.norm()
    return save_model(model, tokenizer, tmp_path_factory.mktemp("stopping-teacher"))


@pytest.fixture(scope="module")
def stopping_server(stopping_model_dir):
    from retort.serve.app import create_app
    from retort.serve.background import serve_in_thread
    from retort.teachers.local import LocalTeacher

    teacher = LocalTeacher.load(str(stopping_model_dir))
    with serve_in_thread(create_app(teacher, "tiny", max_batch=8, wait_ms=50)) as url:
        yield url


@pytest.fixture(scope="module")
def local_capture(stopping_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("local")
    records = [json.loads(line) for line in PROMPTS.read_text().splitlines()[:12]]
    prompts = write_jsonl(folder / "prompts.jsonl", records)
    result = generate(
        GenerateConfig(
            teacher=str(stopping_model_dir), prompts=prompts, out=folder / "s", max_new_tokens=8
        )
    )
    return prompts, {r["id"]: r for r in result.store.rows()}


@pytest.mark.parametrize(
    "endpoint, top_k", [("completions", 0), ("chat", 0), ("completions", 3), ("chat", 3)]
)
def test_http_and_local_capture_store_the_same_ids_when_the_teacher_stops(
    endpoint, top_k, stopping_server, stopping_model_dir, local_capture, tmp_path
):
    prompts, local = local_capture
    stopped = [r for r in local.values() if r["finish_reason"] == "stop"]
    assert 0 < len(stopped) < len(local)  # the test sees both kinds of row
    served = generate(
        GenerateConfig(
            teacher=stopping_server,
            teacher_model="tiny",
            tokenizer=str(stopping_model_dir),
            prompts=prompts,
            out=tmp_path / "http",
            endpoint=endpoint,
            top_k=top_k,
            max_new_tokens=8,
        )
    )
    assert not served.failures and served.written == len(local)
    for row in served.store.rows():
        twin = local[row["id"]]
        assert row["completion_token_ids"] == twin["completion_token_ids"], row["id"]
        assert row["finish_reason"] == twin["finish_reason"], row["id"]
        if top_k:  # the local capture keeps the top 20
            assert row["topk_ids"] == [p[:top_k] for p in twin["topk_ids"]], row["id"]


# Unit cases against a server that answers one fixed payload.


def reply(tokenizer, payload: dict, endpoint: str = "completions", top_k: int = 0):
    with FaultServer(lambda body: ("ok", payload)) as url:
        teacher = HTTPTeacher(url, "tiny", tokenizer, endpoint=endpoint)
        body = teacher.request_body([1, 2], [{"role": "user", "content": "x"}], Sampling(8), top_k)

        async def once():
            async with teacher.client() as client:
                return await teacher.complete(client, body)

        return run_sync(once()).generation


def written(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_text_only_capture_keeps_the_end_token_of_a_stopped_answer(tiny_tokenizer, endpoint):
    eos = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    text = "hello world"
    choice = {"index": 0, "finish_reason": "stop", "logprobs": None}
    choice.update({"text": text} if endpoint == "completions" else {"message": {"content": text}})
    out = reply(tiny_tokenizer, {"choices": [choice], "usage": {}}, endpoint)
    assert out.completion_ids == [*written(tiny_tokenizer, text), eos]
    assert out.finish_reason == "stop"


def test_a_length_cut_or_a_stop_string_gets_no_end_token(tiny_tokenizer):
    text = "hello world"
    cases = [({"finish_reason": "length"}, "length")]
    cases.append(({"finish_reason": "stop", "stop_reason": "\n\n"}, "stop_string"))
    for extra, finish_reason in cases:
        choice = {"index": 0, "text": text, "logprobs": None, **extra}
        out = reply(tiny_tokenizer, {"choices": [choice], "usage": {}})
        assert out.completion_ids == written(tiny_tokenizer, text), extra
        assert out.finish_reason == finish_reason


def test_vllms_stop_token_id_is_the_end_token_written(tiny_tokenizer):
    # vLLM names the stop token it met (a model's second end token) in ``stop_reason``.
    other = tiny_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    choice = {"index": 0, "text": "hi", "finish_reason": "stop", "stop_reason": other}
    out = reply(tiny_tokenizer, {"choices": [choice], "usage": {}})
    assert out.completion_ids == [*written(tiny_tokenizer, "hi"), other]


def test_openai_style_logprobs_without_the_end_token_get_it_with_no_topk(tiny_tokenizer):
    # OpenAI's logprobs.content never holds the end token: it is appended, and its position
    # has no teacher top-k (an empty list: KD-masked in training, CE still teaches the stop).
    eos = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = written(tiny_tokenizer, "hello world")
    content = [
        {
            "token": f"token_id:{i}",
            "logprob": -0.1,
            "top_logprobs": [
                {"token": f"token_id:{i}", "logprob": -0.1},
                {"token": "token_id:9", "logprob": -2.5},
            ],
        }
        for i in ids
    ]
    choice = {
        "index": 0,
        "message": {"content": "hello world"},
        "finish_reason": "stop",
        "logprobs": {"content": content},
    }
    out = reply(tiny_tokenizer, {"choices": [choice], "usage": {}}, "chat", top_k=2)
    assert out.completion_ids == [*ids, eos]
    assert len(out.topk_ids) == len(out.completion_ids) and out.topk_ids[-1] == []
    assert out.topk_logprobs[-1] == [] and all(len(p) == 2 for p in out.topk_ids[:-1])


def test_an_end_token_the_server_already_returned_is_not_doubled(tiny_tokenizer):
    eos = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = [*written(tiny_tokenizer, "hi"), eos]
    logprobs = {
        "tokens": [f"token_id:{i}" for i in ids],
        "token_logprobs": [-0.1] * len(ids),
        "top_logprobs": [{f"token_id:{i}": -0.1, "token_id:9": -2.5} for i in ids],
    }
    choice = {"index": 0, "text": "hi", "finish_reason": "stop", "logprobs": logprobs}
    out = reply(tiny_tokenizer, {"choices": [choice], "usage": {}}, top_k=2)
    assert out.completion_ids == ids and len(out.topk_ids) == len(ids)
