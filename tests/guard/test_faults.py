"""A dead upstream, a garbage upstream, a cut stream, a client that leaves mid-stream: each
gives a clear error, the gateway keeps serving, and every request keeps its audit row."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from retort.serve.background import free_port
from tests.guard.conftest import audit_rows, gateway, new_key
from tests.servers import FaultServer

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def post(url: str, key: str, body: dict, **kw) -> httpx.Response:
    return httpx.post(
        f"{url}/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
        **kw,
    )


def test_dead_upstream_is_a_502_in_openai_shape(policy_file, db):
    with gateway(f"http://127.0.0.1:{free_port()}/v1", policy_file, db) as (url, _):
        key = new_key(db)
        for body in (CHAT, {**CHAT, "stream": True}):
            r = post(url, key, body)
            assert r.status_code == 502
            assert "unreachable" in r.json()["error"]["message"]
        rows = audit_rows(db, 2)
        assert [r["decision"] for r in rows] == ["upstream_error", "upstream_error"]


@pytest.mark.parametrize(
    "action",
    [
        ("raw", b"<html>oops"),
        ("reset",),
        ("raw", b"[1, 2]"),
        ("status", 500, {}, {"detail": "boom"}),
    ],
)
def test_garbage_upstream_is_a_502_and_the_gateway_keeps_serving(policy_file, db, action):
    answers = [
        action,
        (
            "ok",
            {
                "choices": [{"index": 0, "message": {"content": "ok"}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            },
        ),
    ]
    with (
        FaultServer(lambda body: answers.pop(0)) as upstream,
        gateway(upstream, policy_file, db) as (url, _),
    ):
        key = new_key(db)
        first = post(url, key, CHAT)
        assert first.status_code == 502 and first.json()["error"]["type"] == "server_error"
        assert post(url, key, CHAT).status_code == 200
        rows = audit_rows(db, 2)
        assert [r["status"] for r in rows] == [502, 200]
        assert rows[1]["prompt_tokens"] == 3


def test_cut_stream_ends_with_an_error_event(policy_file, db):
    with (
        FaultServer(lambda body: ("sse_cut",)) as upstream,
        gateway(upstream, policy_file, db) as (url, _),
    ):
        r = post(url, new_key(db), {**CHAT, "stream": True})
        assert r.status_code == 200
        assert '"error"' in r.text and r.text.endswith("data: [DONE]\n\n")
        assert audit_rows(db, 1)[0]["status"] == 502


def test_logprobs_never_leak_from_an_upstream_that_sends_them_anyway(policy_file, db):
    leaky = {
        "choices": [
            {
                "index": 0,
                "message": {"content": "x"},
                "logprobs": {"content": [{"token": "x", "logprob": -0.1}]},
            }
        ],
        "prompt_logprobs": [None, {"5": {"logprob": -1.0}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }
    with (
        FaultServer(lambda body: ("ok", leaky)) as upstream,
        gateway(upstream, policy_file, db) as (url, _),
    ):
        r = post(url, new_key(db), CHAT)
        assert r.status_code == 200
        assert r.json()["choices"][0]["logprobs"] is None and "prompt_logprobs" not in r.json()


def test_client_leaving_mid_stream_keeps_serving_and_audits(tiny_server, policy_file, db):
    with gateway(tiny_server, policy_file, db) as (url, _):
        key = new_key(db)
        body = {**CHAT, "stream": True, "max_tokens": 16}
        with httpx.stream(
            "POST",
            f"{url}/chat/completions",
            json=body,
            timeout=30,
            headers={"authorization": f"Bearer {key}"},
        ) as r:
            next(r.iter_raw())  # first chunk, then hang up
        time.sleep(0.5)
        sdk = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
        assert sdk.chat.completions.create(
            model="tiny", messages=CHAT["messages"], max_tokens=2
        ).choices
        rows = audit_rows(db, 2)
        assert len(rows) == 2
        assert {r["decision"] for r in rows} <= {"client_disconnected", "allowed"}


def test_a_failure_after_reserve_still_settles_releases_and_audits(tmp_path, db, monkeypatch):
    from retort.guard import gateway as guard_gateway

    policy = tmp_path / "one.yaml"
    policy.write_text("tiers: {free: {concurrent: 1, requests_per_minute: 100, max_tokens: 8}}")
    answers = [
        ("ok", {"choices": [{"index": 0, "message": {"content": "x"}}], "usage": "lots"}),
        ("ok", {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}),
        ("ok", {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}),
    ]
    with (
        FaultServer(lambda body: answers.pop(0)) as upstream,
        gateway(upstream, policy, db) as (url, _),
    ):
        key = new_key(db, terms=None)
        odd = post(url, key, CHAT)  # usage that is not an object: counted as reserved
        assert odd.status_code == 200
        real = guard_gateway.filter_response

        def broken(*args, **kwargs):
            raise RuntimeError("boom")

        monkeypatch.setattr(guard_gateway, "filter_response", broken)
        failed = post(url, key, CHAT)
        assert failed.status_code == 502 and failed.json()["error"]["type"] == "server_error"
        monkeypatch.setattr(guard_gateway, "filter_response", real)
        assert post(url, key, CHAT).status_code == 200  # the concurrent slot came back
        rows = audit_rows(db, 3)
        assert [r["status"] for r in rows] == [200, 502, 200]
        assert rows[0]["completion_tokens"] == 4  # CHAT reserves max_tokens 4


def test_chat_with_zero_max_completion_tokens_is_served_not_a_500(policy_file, db):
    ok = {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    with (
        FaultServer(lambda body: ("ok", ok)) as upstream,
        gateway(upstream, policy_file, db) as (url, _),
    ):
        body = {"model": "tiny", "messages": CHAT["messages"], "max_completion_tokens": 0}
        assert post(url, new_key(db), body).status_code == 200
        assert audit_rows(db, 1)[0]["status"] == 200
