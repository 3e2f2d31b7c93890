"""The HTTP teacher: against `retort serve` (real server, tiny model) and a fault injector."""

from __future__ import annotations

import json

import pytest

from retort.capture import http_capture
from retort.capture.runner import generate
from retort.capture.store import Store
from retort.config import GenerateConfig
from retort.errors import TeacherError
from retort.models.loading import load_tokenizer, resolve
from retort.teachers import http as http_teacher
from retort.teachers.chat import chat_messages, render_prompt
from tests.conftest import assert_same_capture, write_jsonl
from tests.servers import FaultServer


def http_config(url, tokenizer_dir, prompts, out, **overrides) -> GenerateConfig:
    values = {
        "teacher": url,
        "teacher_model": "tiny",
        "tokenizer": str(tokenizer_dir),
        "prompts": prompts,
        "out": out,
        "top_k": 5,
        "max_new_tokens": 8,
        **overrides,
    }
    return GenerateConfig(**values)


def test_http_capture_equals_local_capture_at_temperature_zero(
    tiny_server, tiny_model_dir, prompts_file, tmp_path
):
    local = generate(
        GenerateConfig(
            teacher=str(tiny_model_dir),
            prompts=prompts_file,
            out=tmp_path / "local",
            top_k=5,
            max_new_tokens=8,
        )
    )
    served = generate(
        http_config(tiny_server, tiny_model_dir, prompts_file, tmp_path / "http", concurrency=4)
    )
    assert served.written == 12 and not served.failures
    assert_same_capture(served.store, local.store)


def test_chat_endpoint_maps_tokens_by_bytes(tiny_server, tiny_model_dir, prompts_file, tmp_path):
    served = generate(
        http_config(
            tiny_server, tiny_model_dir, prompts_file, tmp_path / "chat", endpoint="chat", top_k=3
        )
    )
    assert served.written == 12 and not served.failures
    row = next(iter(served.store.rows()))
    assert len(row["topk_ids"]) == len(row["completion_token_ids"]) > 0


def test_a_server_without_the_model_is_refused_up_front(
    tiny_server, tiny_model_dir, prompts_file, tmp_path
):
    config = http_config(
        tiny_server, tiny_model_dir, prompts_file, tmp_path / "s", teacher_model="other"
    )
    with pytest.raises(TeacherError, match="--teacher-model other: the server serves tiny"):
        generate(config)


@pytest.mark.parametrize("teacher_model", ["tiny", "other"])
def test_a_dead_or_unfit_server_leaves_no_store_behind(
    tiny_server, tiny_model_dir, prompts_file, tmp_path, teacher_model
):
    from retort.serve.background import free_port

    url = f"http://127.0.0.1:{free_port()}/v1" if teacher_model == "tiny" else tiny_server
    config = http_config(
        url, tiny_model_dir, prompts_file, tmp_path / "s", teacher_model=teacher_model
    )
    with pytest.raises(TeacherError):
        generate(config)
    assert not (tmp_path / "s").exists()  # probed before the store (or a progress bar) exists


# Fault schedules by prompt: every prompt ends as a row or a failure; retries are counted.
SCHEDULES = {
    "ok": [],
    "429 with Retry-After": [("status", 429, {"retry-after": "0"}, {})],
    "429 with retry-after-ms": [("status", 429, {"retry-after-ms": "5"}, {})],
    "429 bare": [("status", 429, {}, {"error": {"message": "slow down"}})],
    "500 then 503": [("status", 500, {}, {}), ("status", 503, {}, {})],
    "timeout": [("sleep", 2.0)],
    "reset mid-body": [("reset",)],
    "malformed JSON": [("raw", b"{not json")],
    "partial SSE": [("sse_cut",)],
    "no choices": [("ok", {"choices": []})],
    "logprobs missing": [("ok", "no-logprobs")],
}
FAILING = {
    "400 is not retried": ([("status", 400, {}, {"error": {"message": "bad"}})], 1),
    "always 500": ([("status", 500, {}, {})] * 10, 3),  # 1 try + max_retries 2
    "429 told not to retry": ([("status", 429, {"x-should-retry": "false"}, {})], 1),
}


def fake_completion(prompt_ids: list[int], with_logprobs: bool) -> dict:
    ids = [5, 6, 7]
    choice = {"index": 0, "text": "abc", "finish_reason": "length"}
    if with_logprobs:
        choice["logprobs"] = {
            "tokens": [f"token_id:{i}" for i in ids],
            "token_logprobs": [-0.1, -0.2, -0.3],
            "top_logprobs": [{f"token_id:{i}": -0.1, "token_id:9": -2.0} for i in ids],
        }
    return {
        "choices": [choice],
        "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": 3},
    }


def test_faults_end_as_rows_or_recorded_failures_with_matching_retry_counts(
    tiny_model_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr(http_teacher, "BACKOFF_BASE_S", 0.01)
    tokenizer = load_tokenizer(resolve(str(tiny_model_dir)))
    names = list(SCHEDULES) + list(FAILING)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": n, "prompt": n} for n in names])
    by_ids = {tuple(render_prompt(tokenizer, chat_messages(n, None, None))): n for n in names}
    calls: dict[str, int] = {}

    def respond(body: dict) -> tuple:
        name = by_ids.get(tuple(body["prompt"]))
        if name is None:  # the probe
            return ("ok", fake_completion(body["prompt"], True))
        attempt = calls[name] = calls.get(name, 0) + 1
        schedule = SCHEDULES[name] if name in SCHEDULES else FAILING[name][0]
        if attempt <= len(schedule):
            action = schedule[attempt - 1]
            if action == ("ok", "no-logprobs"):
                return ("ok", fake_completion(body["prompt"], False))
            return action
        return ("ok", fake_completion(body["prompt"], True))

    with FaultServer(respond) as url:
        config = http_config(
            url,
            tiny_model_dir,
            prompts,
            tmp_path / "s",
            top_k=2,
            timeout=0.5,
            max_retries=2,
            concurrency=4,
        )
        result = generate(config)
    rows = {r["id"] for r in Store.open(tmp_path / "s").rows()}
    failed = {f["id"]: f for f in result.failures}
    assert rows == set(SCHEDULES)
    assert set(failed) == set(FAILING)
    assert rows | set(failed) == set(names)  # every prompt is a row or a failure
    for name, (_, attempts) in FAILING.items():
        assert failed[name]["attempts"] == attempts, name
    expected_retries = sum(len(s) for s in SCHEDULES.values()) + 2  # "always 500" retried twice
    assert result.retries == expected_retries
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert {f["id"] for f in manifest["failures"]} == set(FAILING)


def test_a_token_budget_stops_cleanly_and_the_next_run_finishes(tiny_model_dir, tmp_path):
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [{"id": f"p{i}", "prompt": f"p {i}"} for i in range(10)]
    )
    with FaultServer(lambda body: ("ok", fake_completion(body["prompt"], True))) as url:
        first = generate(
            http_config(
                url,
                tiny_model_dir,
                prompts,
                tmp_path / "s",
                top_k=2,
                concurrency=1,
                max_teacher_tokens=40,
            )
        )
        assert 0 < first.written < 10 and first.not_attempted == 10 - first.written
        second = generate(http_config(url, tiny_model_dir, prompts, tmp_path / "s", top_k=2))
    assert second.written == 10 - first.written
    assert len(Store.open(tmp_path / "s").done_ids()) == 10


def test_requests_per_minute_are_limited_on_the_client(tiny_model_dir, tmp_path, monkeypatch):
    import time

    from limits import RateLimitItemPerSecond

    # The same moving window, per second instead of per minute, so the test takes seconds.
    monkeypatch.setattr(http_capture, "RateLimitItemPerMinute", RateLimitItemPerSecond)
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [{"id": f"p{i}", "prompt": f"p {i}"} for i in range(5)]
    )
    arrivals = []

    def respond(body: dict) -> tuple:
        arrivals.append(time.monotonic())
        return ("ok", fake_completion(body["prompt"], True))

    with FaultServer(respond) as url:
        result = generate(
            http_config(url, tiny_model_dir, prompts, tmp_path / "s", top_k=2, rpm=2, concurrency=5)
        )
    assert result.written == 5 and len(arrivals) == 6  # the probe comes first, unlimited
    requests = arrivals[1:]
    for i in range(len(requests) - 2):  # never 3 requests inside one window (small slack)
        assert requests[i + 2] - requests[i] >= 0.9, requests


def test_http_work_runs_from_inside_a_running_event_loop():
    # A notebook calls retort from inside its event loop, where asyncio.run refuses to start.
    import asyncio

    from retort.teachers.http import run_sync

    async def answer() -> int:
        await asyncio.sleep(0)
        return 7

    async def notebook_cell() -> int:
        return run_sync(answer())

    assert run_sync(answer()) == 7
    assert asyncio.run(notebook_cell()) == 7


def test_an_http_store_does_not_claim_retorts_exact_decoding(tiny_server, tiny_model_dir, tmp_path):
    # The server samples with its own defaults beyond temperature/top_p/seed: the fingerprint
    # must say so, not copy the local teacher's neutralised-knob list.
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say hi."}])
    http = generate(http_config(tiny_server, tiny_model_dir, prompts, tmp_path / "http"))
    local = generate(
        GenerateConfig(teacher=str(tiny_model_dir), prompts=prompts, out=tmp_path / "local")
    )
    assert http.store.fingerprint["decoding"]["sampler"] == "the server's"
    assert local.store.fingerprint["decoding"]["model_generation_config"] == "ignored"
