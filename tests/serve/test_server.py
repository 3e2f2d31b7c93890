"""`retort serve` on 127.0.0.1 with a tiny model, driven by the official openai SDK."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from retort.teachers.local import LocalTeacher
from retort.teachers.protocol import Sampling

openai = pytest.importorskip("openai")
NAME = "tiny"


@pytest.fixture(scope="module")
def teacher(tiny_model_dir) -> LocalTeacher:
    return LocalTeacher.load(str(tiny_model_dir))


@pytest.fixture(scope="module")
def server(tiny_server):
    return tiny_server


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server, api_key="unused", max_retries=0)


def test_models_lists_the_served_name(client):
    assert [m.id for m in client.models.list().data] == [NAME]


def test_chat_greedy_logprobs_match_the_local_teacher(client, teacher):
    from retort.teachers.chat import render_prompt

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    response = client.chat.completions.create(
        model=NAME,
        messages=messages,
        temperature=0,
        max_tokens=8,
        logprobs=True,
        top_logprobs=3,
        extra_body={"return_tokens_as_token_ids": True},
    )
    choice = response.choices[0]
    served_ids = [int(t.token.removeprefix("token_id:")) for t in choice.logprobs.content]
    prompt_ids = render_prompt(teacher.tokenizer, messages)
    local = teacher.generate([prompt_ids], Sampling(max_new_tokens=8), top_k=3)[0]
    assert served_ids == local.completion_ids
    for token, logprob, top in zip(
        choice.logprobs.content, local.token_logprobs, local.topk_logprobs, strict=True
    ):
        assert token.logprob == pytest.approx(logprob, abs=1e-4)
        assert [t.logprob for t in token.top_logprobs] == pytest.approx(top, abs=1e-4)
        assert token.top_logprobs[0].token == token.token  # greedy: the top-1 was written
    assert response.usage.prompt_tokens == len(prompt_ids)
    assert response.usage.completion_tokens == len(served_ids)


def test_streamed_chat_equals_the_whole_answer(client):
    messages = [{"role": "user", "content": "Write one sentence about tea."}]
    whole = client.chat.completions.create(
        model=NAME, messages=messages, temperature=0, max_tokens=12
    )
    stream = client.chat.completions.create(
        model=NAME, messages=messages, temperature=0, max_tokens=12, stream=True
    )
    parts, finish = [], None
    for chunk in stream:
        delta = chunk.choices[0].delta
        parts.append(delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(parts) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason


def test_a_stream_asked_for_usage_ends_with_the_usage_of_the_whole_answer(client):
    # guard (and any OpenAI client) settles token budgets from this last chunk
    messages = [{"role": "user", "content": "Write one sentence about tea."}]
    whole = client.chat.completions.create(
        model=NAME, messages=messages, temperature=0, max_tokens=12, n=2
    )
    stream = client.chat.completions.create(
        model=NAME,
        messages=messages,
        temperature=0,
        max_tokens=12,
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completions_with_n_stop_and_prompt_logprobs(client, teacher):
    prompt = "The capital of France is"
    response = client.completions.create(
        model=NAME,
        prompt=prompt,
        max_tokens=10,
        temperature=1.0,
        n=3,
        seed=7,
        logprobs=2,
        extra_body={"prompt_logprobs": 2},
    )
    assert len(response.choices) == 3
    for choice in response.choices:
        assert len(choice.logprobs.tokens) == len(choice.logprobs.token_logprobs)
        assert all(len(top) <= 2 for top in choice.logprobs.top_logprobs)
    prompt_logprobs = response.choices[0].model_extra["prompt_logprobs"]
    prompt_ids = teacher.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert prompt_logprobs[0] is None and len(prompt_logprobs) == len(prompt_ids)
    for actual, entry in zip(prompt_ids[1:], prompt_logprobs[1:], strict=True):
        assert str(actual) in entry and entry[str(actual)]["rank"] >= 1

    first = client.completions.create(model=NAME, prompt=prompt, max_tokens=10, temperature=0)
    text = first.choices[0].text
    if len(text.strip()) > 2:
        stop = text.strip()[1:3]
        cut = client.completions.create(
            model=NAME, prompt=prompt, max_tokens=10, temperature=0, stop=[stop]
        )
        assert stop not in cut.choices[0].text
        assert cut.choices[0].finish_reason == "stop"
        assert text.startswith(cut.choices[0].text)


def test_concurrent_requests_are_batched(client, server):
    before = httpx.get(server.removesuffix("/v1") + "/health").json()

    def ask(i: int) -> str:
        return (
            client.chat.completions.create(
                model=NAME,
                messages=[{"role": "user", "content": f"Count to {i}."}],
                temperature=0,
                max_tokens=6,
            )
            .choices[0]
            .message.content
        )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    after = httpx.get(server.removesuffix("/v1") + "/health").json()
    assert len(answers) == 8
    assert after["jobs"] - before["jobs"] == 8
    assert after["batches"] - before["batches"] < 8
    assert after["largest_batch"] > 1


def test_errors_use_openai_shapes(client):
    with pytest.raises(openai.NotFoundError, match="model 'nope' not found"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(
            model=NAME, temperature=5, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.BadRequestError, match="exceeds the model's 512 positions"):
        client.completions.create(model=NAME, prompt="hello", max_tokens=10_000)
