"""``retort serve --watermark``: completions carry the watermark; a Gumbel key refuses
temperature 0 (greedy text cannot carry it, and a client must not get unmarked text by asking)."""

from __future__ import annotations

import httpx
import pytest

from retort.serve.app import create_app
from retort.serve.background import serve_in_thread
from retort.teachers.local import LocalTeacher
from retort.watermark.detect import detect_pooled
from tests.watermark.conftest import make_key


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    key = make_key("gumbel", context_width=2)
    teacher = LocalTeacher.load(str(tiny_model_dir)).watermarked(key)
    with serve_in_thread(create_app(teacher, "tiny", max_batch=4, wait_ms=20)) as url:
        yield url, key


def complete(url: str, **body) -> httpx.Response:
    request = {"model": "tiny", "prompt": [5, 6, 7, 8], "max_tokens": 16, **body}
    return httpx.post(f"{url}/completions", json=request, timeout=60)


def test_served_completions_carry_the_watermark(served):
    url, key = served
    response = complete(url, temperature=1.0, n=4, logprobs=0, return_tokens_as_token_ids=True)
    assert response.status_code == 200, response.text
    ids = [
        [int(t.removeprefix("token_id:")) for t in choice["logprobs"]["tokens"]]
        for choice in response.json()["choices"]
    ]
    assert sum(map(len, ids)) >= 32
    assert detect_pooled(ids, key, contexts=[[5, 6, 7, 8]] * 4).p_value < 1e-8


def test_gumbel_server_refuses_temperature_zero(served):
    url, _ = served
    response = complete(url, temperature=0.0)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "temperature" and "Gumbel sampling" in error["message"]


def test_on_request_watermarks_only_requests_that_ask(tiny_model_dir):
    # the guard's `watermark` ladder step sets the header; everyone else gets plain text
    key = make_key("gumbel", context_width=2)
    teacher = LocalTeacher.load(str(tiny_model_dir)).watermarked(key)
    app = create_app(teacher, "tiny", max_batch=4, wait_ms=20, on_request=True)
    with serve_in_thread(app) as url:

        def p_value(headers: dict[str, str]) -> float:
            body = {"model": "tiny", "prompt": [5, 6, 7, 8], "max_tokens": 16, "temperature": 1.0}
            body.update(n=4, logprobs=0, return_tokens_as_token_ids=True)
            response = httpx.post(f"{url}/completions", json=body, headers=headers, timeout=60)
            assert response.status_code == 200, response.text
            ids = [
                [int(t.removeprefix("token_id:")) for t in choice["logprobs"]["tokens"]]
                for choice in response.json()["choices"]
            ]
            return detect_pooled(ids, key, contexts=[[5, 6, 7, 8]] * 4).p_value

        assert p_value({"x-retort-watermark": "on"}) < 1e-8
        assert p_value({}) > 1e-4
        # unmarked requests may be greedy even with a gumbel key; marked ones may not
        greedy = {"model": "tiny", "prompt": [5, 6], "max_tokens": 4, "temperature": 0.0}
        assert httpx.post(f"{url}/completions", json=greedy, timeout=60).status_code == 200
        marked = httpx.post(
            f"{url}/completions", json=greedy, headers={"x-retort-watermark": "on"}, timeout=60
        )
        assert marked.status_code == 400
