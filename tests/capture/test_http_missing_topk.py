"""A reply without the teacher's top-k for every written token is refused at capture and
recorded as a failure with the reason, never stored as a row whose missing positions training
would fill in (issue 9, item 6)."""

from __future__ import annotations

import json

import pytest

from retort.capture.runner import generate
from retort.capture.store import Store
from tests.capture.test_http import http_config
from tests.conftest import write_jsonl
from tests.servers import FaultServer

IDS = [5, 6, 7]


def completions(top_logprobs) -> dict:
    logprobs = {
        "tokens": [f"token_id:{i}" for i in IDS],
        "token_logprobs": [-0.1, -0.2, -0.3],
        "top_logprobs": top_logprobs,
    }
    choice = {"index": 0, "text": "abc", "finish_reason": "length", "logprobs": logprobs}
    return {"choices": [choice], "usage": {"prompt_tokens": 3, "completion_tokens": 3}}


def chat(entry_tops) -> dict:
    content = []
    for i, tops in zip(IDS, entry_tops, strict=True):
        entry = {"token": f"token_id:{i}", "logprob": -0.1}
        if tops != "absent":
            entry["top_logprobs"] = tops
        content.append(entry)
    choice = {
        "index": 0,
        "message": {"content": "abc"},
        "finish_reason": "length",
        "logprobs": {"content": content},
    }
    return {"choices": [choice], "usage": {"prompt_tokens": 3, "completion_tokens": 3}}


def full(i: int) -> dict:
    return {f"token_id:{i}": -0.1, "token_id:9": -2.0}


def chat_full(i: int) -> list:
    return [{"token": f"token_id:{i}", "logprob": -0.1}, {"token": "token_id:9", "logprob": -2.0}]


CASES = {
    "completions: top_logprobs null": ("completions", completions(None)),
    "completions: a position null": ("completions", completions([full(5), None, full(7)])),
    "completions: a position short": ("completions", completions([full(5), full(6)])),
    "completions: fewer than k": (
        "completions",
        completions([full(5), {"token_id:6": -0.2}, full(7)]),
    ),
    "chat: top_logprobs null": ("chat", chat([chat_full(5), None, chat_full(7)])),
    "chat: top_logprobs absent": ("chat", chat([chat_full(5), "absent", chat_full(7)])),
    "chat: top_logprobs empty": ("chat", chat([chat_full(5), [], chat_full(7)])),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_reply_missing_topk_positions_is_a_recorded_failure_not_a_row(
    case, tiny_model_dir, tmp_path
):
    endpoint, broken = CASES[case]
    good = completions([full(i) for i in IDS]) if endpoint == "completions" else None
    good = good or chat([chat_full(i) for i in IDS])
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "broken", "prompt": "broken"}])

    def respond(body: dict) -> tuple:
        probe = body.get("max_tokens") == 1
        return ("ok", good if probe else broken)

    with FaultServer(respond) as url:
        result = generate(
            http_config(url, tiny_model_dir, prompts, tmp_path / "s", top_k=2, endpoint=endpoint)
        )
    assert result.written == 0 and [f["id"] for f in result.failures] == ["broken"]
    assert "top-k" in result.failures[0]["reason"]
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["failures"][0]["id"] == "broken"
    assert "top-k" in manifest["failures"][0]["reason"]
    assert list(Store.open(tmp_path / "s").rows()) == []
