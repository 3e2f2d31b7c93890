"""A scripted judge server, answers files and a tiny judge model long enough for the prompts."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import build_tiny_model, save_model, write_jsonl

# The built-in pairwise prompt is ~850 tokens of the tiny tokenizer: more than the 512
# positions of the shared tiny model.
JUDGE_POSITIONS = 4096


@pytest.fixture(scope="session")
def tiny_judge_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A random 2-layer judge (it writes garbage: its verdicts are mostly unparsable)."""
    model = build_tiny_model(tiny_tokenizer, layers=2, seed=3)
    model.config.max_position_embeddings = JUDGE_POSITIONS
    return save_model(model, tiny_tokenizer, tmp_path_factory.mktemp("tiny-judge"))


def chat_payload(text: str) -> dict:
    return {
        "choices": [{"index": 0, "message": {"content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
    }


def shown_answers(prompt: str) -> tuple[str, str]:
    """(assistant A's answer, assistant B's answer) as the built-in pairwise prompt shows them."""
    first = re.search(r"Assistant A's Answer\]\n(.*?)\n\[The End", prompt, re.S)
    second = re.search(r"Assistant B's Answer\]\n(.*?)\n\[The End", prompt, re.S)
    assert first and second, prompt
    return first.group(1), second.group(1)


def scripted(decide: Callable[[list[dict]], str], log: list | None = None):
    """A FaultServer ``respond`` that answers each chat request with ``decide(messages)``;
    the probe ("Hi") gets "ok". Every judge request's messages are appended to ``log``."""

    def respond(body: dict) -> tuple:
        messages = body["messages"]
        if messages == [{"role": "user", "content": "Hi"}]:
            return ("ok", chat_payload("ok"))
        if log is not None:
            log.append(messages)
        return ("ok", chat_payload(decide(messages)))

    return respond


def answers_file(path: Path, answers: dict[str, str]) -> Path:
    return write_jsonl(path, [{"id": k, "answer": v} for k, v in answers.items()])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
