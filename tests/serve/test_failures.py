"""A request whose generation fails (an OOM, say) is answered with OpenAI's error shapes: a
500 error body, or, streamed, an error event and ``[DONE]``; the server goes on serving."""

from __future__ import annotations

import json

import httpx
import pytest

from retort.serve.app import create_app
from retort.serve.background import serve_in_thread
from retort.teachers.local import LocalTeacher


class Flaky:
    """Makes a teacher's ``generate`` raise while ``failing`` is set."""

    def __init__(self, teacher: LocalTeacher) -> None:
        self.failing = True
        self.real = teacher.generate
        teacher.generate = self

    def __call__(self, *args, **kwargs):
        if self.failing:
            raise RuntimeError("CUDA out of memory (simulated)")
        return self.real(*args, **kwargs)


@pytest.fixture
def served(tiny_model_dir):
    teacher = LocalTeacher.load(str(tiny_model_dir))
    flaky = Flaky(teacher)
    with serve_in_thread(create_app(teacher, "tiny", max_batch=4, wait_ms=5)) as url:
        yield url, flaky


BODY = {"model": "tiny", "prompt": "Tell me about tea.", "max_tokens": 4}


def test_a_failing_streamed_request_ends_with_an_error_event_and_done(served):
    url, flaky = served
    with httpx.Client(timeout=10) as client:
        for path, extra in (("completions", {}), ("chat/completions", {"n": 2})):
            body = {**BODY, **extra, "stream": True}
            if path.startswith("chat"):
                body.pop("prompt")
                body["messages"] = [{"role": "user", "content": "Tell me about tea."}]
            with client.stream("POST", f"{url}/{path}", json=body) as response:
                events = [line for line in response.iter_lines() if line.startswith("data: ")]
            assert events[-1] == "data: [DONE]"
            error = json.loads(events[-2].removeprefix("data: "))["error"]
            assert "out of memory" in error["message"] and error["type"] == "server_error"
        flaky.failing = False  # the server is still there and serves the next request
        with client.stream("POST", f"{url}/completions", json={**BODY, "stream": True}) as ok:
            events = [line for line in ok.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        assert not any('"error"' in e for e in events)


def test_a_failing_request_gets_an_openai_shaped_500_and_the_server_goes_on(served):
    url, flaky = served
    response = httpx.post(f"{url}/completions", json=BODY, timeout=10)
    assert response.status_code == 500
    error = response.json()["error"]
    assert "out of memory" in error["message"] and error["type"] == "server_error"
    flaky.failing = False
    again = httpx.post(f"{url}/completions", json=BODY, timeout=10)
    assert again.status_code == 200 and again.json()["choices"][0]["text"] is not None
