"""The official openai SDK against guard against a real `retort serve` (tiny model)."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from retort.guard.keys import KeyStore
from tests.guard.conftest import audit_rows, gateway, new_key

MESSAGES = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture
def guarded(tiny_server, policy_file, db):
    with gateway(tiny_server, policy_file, db) as (url, app):
        yield url, app


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=30)


def test_chat_and_completions_pass_through_with_limit_headers(guarded, db):
    url, _ = guarded
    sdk = client(url, new_key(db))
    raw = sdk.chat.completions.with_raw_response.create(
        model="tiny", messages=MESSAGES, max_tokens=4
    )
    reply = raw.parse()
    assert reply.choices[0].message.content is not None
    assert raw.headers["x-ratelimit-limit-requests"] == "1000"
    assert int(raw.headers["x-ratelimit-remaining-requests"]) == 999
    assert raw.headers["x-ratelimit-limit-tokens"] == "100000"
    assert raw.headers["x-retort-terms-version"] == "2026-12"
    done = sdk.completions.create(model="tiny", prompt="Once upon", max_tokens=3)
    assert done.usage.completion_tokens <= 3
    assert [m.id for m in sdk.models.list()] == ["tiny"]
    rows = audit_rows(db, 3)
    assert [r["endpoint"] for r in rows] == [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
    ]
    assert rows[0]["status"] == 200 and rows[0]["prompt_tokens"] > 0
    assert '"messages"' in rows[0]["body"]


def test_streaming_passes_chunks_and_audits_usage(guarded, db):
    url, _ = guarded
    sdk = client(url, new_key(db))
    stream = sdk.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, stream=True)
    chunks = list(stream)
    assert chunks and all(c.object == "chat.completion.chunk" for c in chunks)
    row = audit_rows(db, 1)[0]
    assert row["status"] == 200 and 0 <= row["completion_tokens"] <= 6


@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_refused_on_an_off_tier(guarded, db, stream):
    url, _ = guarded
    sdk = client(url, new_key(db))
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        sdk.chat.completions.create(
            model="tiny", messages=MESSAGES, logprobs=True, top_logprobs=3, stream=stream
        )
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        sdk.completions.create(model="tiny", prompt="a", logprobs=2, stream=stream)


def test_logprobs_capped_and_rounded_on_a_research_tier(guarded, db):
    url, _ = guarded
    sdk = client(url, new_key(db, "research"))
    reply = sdk.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=3, logprobs=True, top_logprobs=5
    )
    for entry in reply.choices[0].logprobs.content:
        assert len(entry.top_logprobs) <= 2
        assert entry.logprob == round(entry.logprob, 1)


def test_policy_limits_on_n_max_tokens_logit_bias(guarded, db):
    url, _ = guarded
    sdk = client(url, new_key(db, "research"))
    with pytest.raises(openai.BadRequestError, match="n: at most 2"):
        sdk.chat.completions.create(model="tiny", messages=MESSAGES, n=3)
    with pytest.raises(openai.BadRequestError, match="max_tokens: at most 16"):
        sdk.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=17)
    with pytest.raises(openai.BadRequestError, match="logit_bias"):
        sdk.chat.completions.create(
            model="tiny", messages=MESSAGES, logprobs=True, logit_bias={"5": 10}
        )


def test_unknown_revoked_and_expired_keys_get_the_same_401(guarded, db):
    url, _ = guarded
    good = new_key(db)
    key_id = good.split("-")[1]
    expired = KeyStore(db).create("old", "free", expires=time.time() - 1, terms_version="2026-12")
    bad = [None, "rk-000000000000-" + "x" * 43, good[:-1] + "y", expired[1], "Bearer"]
    messages = set()
    for key in bad:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        r = httpx.post(f"{url}/chat/completions", json={"model": "tiny"}, headers=headers)
        assert r.status_code == 401
        messages.add(r.json()["error"]["message"])
    assert len(messages) == 1
    client(url, good).models.list()
    KeyStore(db).revoke(key_id)
    time.sleep(0.7)  # the gateway's key cache looks at the database at most every 0.5 s
    with pytest.raises(openai.AuthenticationError):
        client(url, good).models.list()


def test_terms_change_refuses_old_keys_and_a_blocked_key_is_told_not_to_retry(guarded, db):
    url, _ = guarded
    with pytest.raises(openai.PermissionDeniedError, match="terms"):
        client(url, new_key(db, terms="2025-01")).models.list()
    key = new_key(db)
    KeyStore(db).set_blocked(key.split("-")[1], True)
    time.sleep(0.7)
    r = httpx.get(f"{url}/models", headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 429 and r.headers["x-should-retry"] == "false"


def test_rate_limit_answers_429_with_retry_after(guarded, db):
    url, _ = guarded
    sdk = client(url, new_key(db, "tight"))
    for _ in range(2):
        sdk.completions.create(model="tiny", prompt="a", max_tokens=1)
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.completions.create(model="tiny", prompt="a", max_tokens=1)
    headers = caught.value.response.headers
    assert 0 < int(headers["retry-after"]) <= 60
    assert 0 < int(headers["retry-after-ms"]) <= 60_000
    rows = audit_rows(db, 3)
    assert rows[-1]["decision"] == "rate_limited" and rows[-1]["status"] == 429


def test_metrics_and_healthz(guarded, db):
    url, _ = guarded
    client(url, new_key(db)).completions.create(model="tiny", prompt="a", max_tokens=1)
    base = url.removesuffix("/v1")
    assert httpx.get(f"{base}/healthz").json() == {"ok": True}
    text = httpx.get(f"{base}/metrics").text
    assert 'guard_requests_total{endpoint="/v1/completions",status="200",tier="free"} 1.0' in text
    assert "guard_request_seconds_bucket" in text and "guard_decisions_total" in text
