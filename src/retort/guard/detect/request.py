"""One request as the detector reads it, built from an access-log record (DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The sampling parameters the sweep features look at, as the OpenAI body names them.
PARAMS = (
    "logprobs",
    "top_logprobs",
    "n",
    "seed",
    "temperature",
    "top_p",
    "max_tokens",
    "response_format",
)


@dataclass(frozen=True)
class Request:
    """What the features need of one logged request.

    ``text`` is what the client asked this turn: the last user message of a chat, or the
    prompt of a completion (the first, for a batched prompt). ``history`` holds the earlier
    assistant messages a follow-up may refer to. With ``hashed`` the log kept only sha256
    digests of the text, so ``text`` is a digest: repeats still show, content does not.
    """

    ts: float
    key: str
    client: str | None = None
    endpoint: str = "/v1/chat/completions"
    model: str | None = None
    text: str = ""
    system: str = ""
    user_turns: int = 1
    history: tuple[str, ...] = ()
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    status: int = 200
    params: dict[str, Any] = field(default_factory=dict)
    decision: str | None = None
    hashed: bool = False


def _content(message: Any) -> str:
    """A message's text; multi-part content keeps its text parts."""
    if not isinstance(message, dict):
        return str(message)
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return content if isinstance(content, str) else ""


def from_record(record: dict[str, Any]) -> Request:
    """A Request from one access-log object; raises KeyError/TypeError/ValueError on a record
    that lacks ``ts`` or ``key`` or has them of the wrong type (the log reader names the line).
    """
    ts = record["ts"]
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise TypeError("'ts' is not a number")
    key = record["key"]
    if not isinstance(key, str) or not key:
        raise TypeError("'key' is not a non-empty string")
    body = record.get("body")
    body = body if isinstance(body, dict) else {}
    usage = record.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    messages = body.get("messages")
    text, system, turns, history = "", "", 1, ()
    if isinstance(messages, list):
        users = [_content(m) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        system = " ".join(
            _content(m)
            for m in messages
            if isinstance(m, dict) and m.get("role") in ("system", "developer")
        )
        history = tuple(
            _content(m) for m in messages if isinstance(m, dict) and m.get("role") == "assistant"
        )
        text, turns = (users[-1] if users else ""), max(len(users), 1)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = prompt[0] if prompt else ""
        text = prompt if isinstance(prompt, str) else ""
    hashed = text.startswith("sha256:") and len(text) == 71
    status = record.get("status")
    return Request(
        ts=float(ts),
        key=key,
        client=record.get("client") if isinstance(record.get("client"), str) else None,
        endpoint=str(record.get("endpoint") or "/v1/chat/completions"),
        model=body.get("model") if isinstance(body.get("model"), str) else record.get("model"),
        text=text,
        system=system,
        user_turns=turns,
        history=history,
        prompt_tokens=_tokens(usage.get("prompt_tokens")),
        completion_tokens=_tokens(usage.get("completion_tokens")),
        status=status if isinstance(status, int) and not isinstance(status, bool) else 0,
        params={p: body[p] for p in PARAMS if p in body},
        decision=record.get("decision") if isinstance(record.get("decision"), str) else None,
        hashed=hashed,
    )


def _tokens(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
