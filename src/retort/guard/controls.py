"""Extraction controls: what a tier's request may ask for, and what its response may carry.

Requests are checked and rewritten before they go upstream (logprobs refused or capped, n and
max_tokens bounded, logit_bias refused together with logprobs, the system notice added);
responses are filtered again on the way back, so a misbehaving upstream cannot leak what the
policy withholds.
"""

from __future__ import annotations

import json
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
    """Check ``body`` against the tier and rewrite it in place; returns what was changed.

    Every count that fans out upstream work is bounded: ``n`` × the number of prompts (a
    completions ``prompt`` may be a list) ≤ ``max_n``; ``best_of`` may not exceed ``n`` and beam
    search is refused (both would generate more than is billed); both ``max_tokens`` and
    ``max_completion_tokens`` are ≤ the tier's cap. Bools are not counts."""
    changes: list[str] = []
    model = body.get("model")
    if tier.models and model not in tier.models:
        raise Refused(
            f"model '{model}' is not available to this key", "model", 404, "model_not_found"
        )
    n = _count_field(body, "n", tier.max_n, default=1)
    prompts = 1 if chat else len(_prompts(body))
    if prompts * n > tier.max_n:
        raise Refused(
            f"n: {n} completions for each of {prompts} prompts is more than this key's tier "
            f"allows ({tier.max_n} in all)",
            "n",
        )
    _count_field(body, "best_of", n, default=n)
    if body.get("use_beam_search"):
        raise Refused("use_beam_search is not available through the gateway", "use_beam_search")
    # 0 is "unset" upstream (vLLM takes max_completion_tokens or max_tokens).
    _count_field(body, "max_completion_tokens", tier.max_tokens, default=0, minimum=0)
    if body.get("max_tokens") is None and not (chat and body.get("max_completion_tokens")):
        body["max_tokens"] = tier.max_tokens  # bounds the reservation, and the upstream
    elif body.get("max_tokens") is not None:
        _count_field(body, "max_tokens", tier.max_tokens, default=tier.max_tokens)
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
        for k_field in ("top_logprobs" if chat else "logprobs", "prompt_logprobs"):
            k = body.get(k_field)
            # vLLM reads -1 as "the whole vocabulary".
            if isinstance(k, int) and not isinstance(k, bool) and not 0 <= k <= lp.top_k:
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
        elif not chat and isinstance(body.get("prompt"), list):
            if not all(isinstance(p, str) for p in body["prompt"]):
                # A notice cannot be put in front of token ids without the model's tokenizer.
                raise Refused(
                    "prompt: token-id prompts are not allowed on this key's tier (it adds a "
                    "notice to every prompt); send the prompt as text",
                    "prompt",
                )
            body["prompt"] = [f"{tier.system_notice}\n\n{p}" for p in body["prompt"]]
            changes.append("notice prefixed")
    return changes


def reserved_output(body: dict[str, Any], chat: bool) -> int:
    """Output tokens to reserve for a checked body: the field the endpoint honours (chat:
    ``max_completion_tokens`` when set and > 0, else ``max_tokens``; completions:
    ``max_tokens``) × ``n`` × the number of prompts."""
    per = body.get("max_completion_tokens") if chat else None
    per = per or body.get("max_tokens") or 0
    prompts = 1 if chat else len(_prompts(body))
    return per * (body.get("n") or 1) * prompts


def _prompts(body: dict[str, Any]) -> list[Any]:
    """A completions ``prompt`` as the list of prompts the upstream answers one by one: a
    string or one list of token ids is one prompt; a list of strings or of token-id lists is
    a batch."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        return prompt
    return [prompt]


def _count_field(body: dict[str, Any], name: str, most: int, default: int, minimum: int = 1) -> int:
    """``body[name]`` as an int in ``[minimum, most]`` (``default`` when absent or null)."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise Refused(f"{name}: must be an integer ≥ {minimum}, not {json.dumps(value)}", name)
    if value > most:
        raise Refused(f"{name}: at most {most} on this key's tier", name)
    return value


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
    """Strip or degrade logprobs in a response (or stream chunk) in place; vLLM's
    ``prompt_logprobs`` (top level or per choice) get the same top-k cut, rounding and noise."""
    holders = [payload, *(c for c in payload.get("choices") or [] if isinstance(c, dict))]
    for holder in holders:
        if "prompt_logprobs" not in holder:
            continue
        if not lp.enabled:
            holder.pop("prompt_logprobs")
        elif isinstance(holder["prompt_logprobs"], list):
            holder["prompt_logprobs"] = [
                _degrade_prompt_position(p, lp, rng) for p in holder["prompt_logprobs"]
            ]
    for choice in holders[1:]:
        if not lp.enabled:
            if "logprobs" in choice:
                choice["logprobs"] = None
            continue
        if isinstance(choice.get("logprobs"), dict):
            _degrade(choice["logprobs"], lp, rng)


def _degrade_prompt_position(alts: Any, lp: Logprobs, rng: random.Random) -> Any:
    """One prompt position, ``{token_id: {"logprob": x, "rank": r, ...}}``: the top-k most
    likely kept, their values degraded; anything else (the first position's None) as it is."""
    if not isinstance(alts, dict):
        return alts

    def logprob(entry: Any) -> float:
        x = entry.get("logprob") if isinstance(entry, dict) else entry
        ok = isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
        return x if ok else -math.inf

    items = sorted(alts.items(), key=lambda kv: -logprob(kv[1]))
    if lp.top_k is not None:
        items = items[: lp.top_k]
    return {
        k: {**v, "logprob": _value(v.get("logprob"), lp, rng)}
        if isinstance(v, dict)
        else _value(v, lp, rng)
        for k, v in items
    }


def _value(x: Any, lp: Logprobs, rng: random.Random) -> Any:
    """One logprob with the tier's noise and rounding (values stay ≤ 0)."""
    if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
        return x
    if lp.noise:
        x = min(x + rng.gauss(0.0, lp.noise), 0.0)
    if lp.decimals is not None:
        x = round(x, lp.decimals)
    return x


def _degrade(logprobs: dict[str, Any], lp: Logprobs, rng: random.Random) -> None:
    def value(x: Any) -> Any:
        return _value(x, lp, rng)

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
