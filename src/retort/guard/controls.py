"""Extraction controls: what a tier's request may ask for, and what its response may carry.

Requests are checked and rewritten before they go upstream (logprobs refused or capped, n and
max_tokens bounded, logit_bias refused together with logprobs, the system notice added);
responses are filtered again on the way back, so a misbehaving upstream cannot leak what the
policy withholds.
"""

from __future__ import annotations

import math
import random
from typing import Any

from retort.guard.policy import Logprobs, Tier


class Refused(Exception):
    """A request the tier does not allow: answered 400 (or 404 for a model) naming the param."""

    def __init__(self, message: str, param: str | None, status: int = 400, code: str = "") -> None:
        super().__init__(message)
        self.message, self.param, self.status = message, param, status
        self.code = code or "policy_violation"


def apply_request(body: dict[str, Any], tier: Tier, chat: bool) -> list[str]:
    """Check ``body`` against the tier and rewrite it in place; returns what was changed."""
    changes: list[str] = []
    model = body.get("model")
    if tier.models and model not in tier.models:
        raise Refused(
            f"model '{model}' is not available to this key", "model", 404, "model_not_found"
        )
    n = body.get("n") or 1
    if not isinstance(n, int) or n > tier.max_n:
        raise Refused(f"n: at most {tier.max_n} on this key's tier", "n")
    field = "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens"
    asked = body.get(field)
    if asked is None:
        body[field] = tier.max_tokens
    elif not isinstance(asked, int) or asked > tier.max_tokens:
        raise Refused(f"{field}: at most {tier.max_tokens} on this key's tier", field)
    wants = _wants_logprobs(body, chat)
    if body.get("logit_bias") and (wants or not tier.allow_logit_bias):
        raise Refused(
            "logit_bias is not allowed together with logprobs"
            if wants
            else "logit_bias is not allowed on this key's tier",
            "logit_bias",
        )
    lp = tier.logprobs
    if wants and not lp.enabled:
        raise Refused("logprobs are not available on this key's tier", "logprobs")
    if wants and lp.top_k is not None:
        k_field = "top_logprobs" if chat else "logprobs"
        k = body.get(k_field)
        if isinstance(k, int) and k > lp.top_k:
            body[k_field] = lp.top_k
            changes.append(f"{k_field} capped at {lp.top_k}")
    if tier.system_notice:
        if chat and isinstance(body.get("messages"), list):
            body["messages"] = [
                {"role": "system", "content": tier.system_notice},
                *body["messages"],
            ]
            changes.append("system notice added")
        elif not chat and isinstance(body.get("prompt"), str):
            body["prompt"] = f"{tier.system_notice}\n\n{body['prompt']}"
            changes.append("notice prefixed")
    return changes


def _wants_logprobs(body: dict[str, Any], chat: bool) -> bool:
    if body.get("prompt_logprobs") is not None:  # vLLM's extension
        return True
    if chat:
        return bool(body.get("logprobs")) or body.get("top_logprobs") is not None
    return body.get("logprobs") is not None


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """Tokens the prompt may take, before the upstream has counted them: about four characters
    a token (OpenAI estimates the same way for its limits), plus a few per chat message."""
    if isinstance(body.get("messages"), list):
        chars = sum(
            len(str(m.get("content", ""))) if isinstance(m, dict) else len(str(m))
            for m in body["messages"]
        )
        return chars // 4 + 4 * len(body["messages"]) + 1
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    return len(str(prompt)) // 4 + 1


def filter_response(payload: dict[str, Any], lp: Logprobs, rng: random.Random) -> None:
    """Strip or degrade logprobs in a response (or stream chunk) in place."""
    if "prompt_logprobs" in payload and not lp.enabled:
        payload.pop("prompt_logprobs")
    for choice in payload.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if not lp.enabled:
            choice.pop("prompt_logprobs", None)
            if "logprobs" in choice:
                choice["logprobs"] = None
            continue
        if isinstance(choice.get("logprobs"), dict):
            _degrade(choice["logprobs"], lp, rng)


def _degrade(logprobs: dict[str, Any], lp: Logprobs, rng: random.Random) -> None:
    def value(x: Any) -> Any:
        if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
            return x
        if lp.noise:
            x = min(x + rng.gauss(0.0, lp.noise), 0.0)
        if lp.decimals is not None:
            x = round(x, lp.decimals)
        return x

    for entry in logprobs.get("content") or []:  # chat shape
        if isinstance(entry, dict):
            entry["logprob"] = value(entry.get("logprob"))
            top = entry.get("top_logprobs") or []
            if lp.top_k is not None:
                top = top[: lp.top_k]
            entry["top_logprobs"] = [{**t, "logprob": value(t.get("logprob"))} for t in top]
    if isinstance(logprobs.get("token_logprobs"), list):  # legacy completions shape
        logprobs["token_logprobs"] = [value(x) for x in logprobs["token_logprobs"]]
    if isinstance(logprobs.get("top_logprobs"), list):
        kept = []
        for alts in logprobs["top_logprobs"]:
            if isinstance(alts, dict):
                items = sorted(
                    alts.items(), key=lambda kv: -kv[1] if isinstance(kv[1], float) else 0
                )
                if lp.top_k is not None:
                    items = items[: lp.top_k]
                alts = {k: value(v) for k, v in items}
            kept.append(alts)
        logprobs["top_logprobs"] = kept
