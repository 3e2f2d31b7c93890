"""A streaming upstream that sends logprobs and a usage chunk: guard strips the logprobs on an
`off` tier, settles the usage it reports, and drops the usage chunk the client did not ask
for; and `kill -HUP` reloads the policy of a running `retort guard serve`."""

from __future__ import annotations

import json
import signal
import time

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from retort.serve.background import serve_in_thread
from tests.guard.conftest import audit_rows, gateway, new_key
from tests.guard.test_limits import start_gateway, wait_up
from tests.servers import FaultServer


def leaky_upstream() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()
        asked_usage = body.get("stream_options", {}).get("include_usage")

        def chunk(**fields) -> str:
            return "data: " + json.dumps({"object": "chat.completion.chunk", **fields}) + "\n\n"

        async def events():
            lp = {"content": [{"token": "a", "logprob": -0.5, "top_logprobs": []}]}
            yield chunk(choices=[{"index": 0, "delta": {"content": "a"}, "logprobs": lp}])
            yield chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
            if asked_usage:
                yield chunk(choices=[], usage={"prompt_tokens": 7, "completion_tokens": 3})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def test_streamed_logprobs_never_leak_and_usage_is_read(policy_file, db):
    with (
        serve_in_thread(leaky_upstream()) as upstream,
        gateway(upstream, policy_file, db) as (
            url,
            _,
        ),
    ):
        body = {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": True}
        r = httpx.post(
            f"{url}/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {new_key(db)}"},
        )
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
        assert "-0.5" not in r.text and '"usage"' not in r.text
        row = audit_rows(db, 1)[0]
        assert (row["prompt_tokens"], row["completion_tokens"]) == (7, 3)


def test_sighup_reloads_a_running_gateway(tmp_path):
    policy = tmp_path / "guard.yaml"
    policy.write_text("tiers: {t: {max_tokens: 4}}")
    db = tmp_path / "guard.sqlite"
    key = new_key(db, "t", terms=None)
    ok = {"choices": [{"index": 0, "text": "x"}], "usage": {"prompt_tokens": 1}}
    with FaultServer(lambda body: ("ok", ok)) as upstream:
        proc, base = start_gateway(upstream, policy, db, "")
        try:
            wait_up(base, proc)

            def status() -> int:
                return httpx.post(
                    f"{base}/v1/completions",
                    json={"model": "m", "prompt": "a", "max_tokens": 8},
                    headers={"authorization": f"Bearer {key}"},
                ).status_code

            assert status() == 400  # max_tokens 8 > 4
            policy.write_text("tiers: {t: {max_tokens: 8}}")
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while status() != 200:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(20)
