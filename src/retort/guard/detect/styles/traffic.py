"""What every simulated style is built from: one key's traffic (its random stream, addresses and
the records it sends), human and machine timing, and text composed from the corpus.

A record is what ``retort guard log export`` writes for one request (``guard/export.py``); its
``status``, ``decision`` and ``reason`` are settled later by the tier's rate limit
(``simulate.limit``). Tokens are counted as the gateway's upstream would, roughly 1.3 per word.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from retort.guard.detect.corpora import Corpus, Doc, Prompt, words

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
TOKENS_PER_WORD = 1.3
MESSAGE_TOKENS = 4  # the chat template's framing of each message
HOUR = 3600.0
# What each tier of recipes/guard/guard.yaml lets through: clients are written for their tier
# (no logprobs on free), and the requests-per-minute limit turns bursts into 429s.
TIERS: dict[str, dict[str, int]] = {
    "free": {"rpm": 20, "top_logprobs": 0, "max_n": 1, "max_tokens": 512},
    "pro": {"rpm": 300, "top_logprobs": 5, "max_n": 4, "max_tokens": 2048},
    "partner": {"rpm": 3000, "top_logprobs": 20, "max_n": 8, "max_tokens": 4096},
}
DAY = 86400.0


def tokens(text: str) -> int:
    """Tokens of a text: about 1.3 per word, at least one."""
    return max(1, math.ceil(words(text) * TOKENS_PER_WORD))


@dataclass
class KeyTraffic:
    """One key's traffic as its style builds it.

    ``rng`` is the key's own stream (never the global one), so a key's traffic does not change
    when another style is added or scaled. ``clients`` are the addresses it sends from; the
    first is its usual one.
    """

    key: str
    style: str
    tier: str
    model: str
    clients: tuple[str, ...]
    rotate: bool  # behind a proxy pool: every request from any address of the pool
    corpus: Corpus
    rng: random.Random
    start: float
    end: float
    records: list[dict[str, Any]] = field(default_factory=list)

    def client(self) -> str:
        if self.rotate or len(self.clients) == 1:
            return self.rng.choice(self.clients)
        # A person's home or office address, now and then a phone or a café.
        return self.clients[0] if self.rng.random() < 0.85 else self.rng.choice(self.clients[1:])

    def chat(
        self, ts: float, messages: list[dict[str, str]], completion: int, **params: Any
    ) -> float:
        """Log a chat request at ``ts`` answered with ``completion`` tokens (per choice);
        returns when the answer finished. ``params`` are the body's sampling fields."""
        body = {"model": self.model, "messages": messages, **params}
        prompt = sum(_message_tokens(m) for m in messages)
        if "tools" in body:  # the tool schemas are part of the prompt the model reads
            prompt += tokens(json.dumps(body["tools"]))
        return self._log(ts, CHAT, body, prompt, completion)

    def complete(self, ts: float, prompt: str, completion: int, **params: Any) -> float:
        """Log a ``/v1/completions`` request; returns when the answer finished."""
        body = {"model": self.model, "prompt": prompt, **params}
        return self._log(ts, COMPLETIONS, body, tokens(prompt), completion)

    def _log(self, ts: float, endpoint: str, body: dict, prompt: int, completion: int) -> float:
        _fit_tier(body, TIERS[self.tier])
        if "max_tokens" in body:
            completion = min(completion, body["max_tokens"])
        completion *= body.get("n", 1)
        # Time to first token, then a steady decode rate with some load-dependent noise.
        latency = (0.15 + 0.25 * self.rng.random() + completion * 0.018) * (
            0.8 + 0.4 * self.rng.random()
        )
        self.records.append(
            {
                "ts": round(ts, 3),
                "key": self.key,
                "client": self.client(),
                "endpoint": endpoint,
                "body": body,
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
                "status": 200,
                "tier": self.tier,
                "model": self.model,
                "latency_ms": round(latency * 1000, 1),
                "decision": "allowed",
                "reason": None,
            }
        )
        return ts + latency


def _message_tokens(message: dict[str, Any]) -> int:
    """A message's prompt tokens: its text (an assistant's tool call has none, only the
    call's arguments) and the template's framing."""
    count = tokens(message["content"]) if message.get("content") else 0
    if "tool_calls" in message:
        count += tokens(json.dumps(message["tool_calls"]))
    return count + MESSAGE_TOKENS


def _fit_tier(body: dict[str, Any], tier: dict[str, int]) -> None:
    """Bound the body's fields to what the tier allows, as a client written for it would."""
    if not tier["top_logprobs"]:
        for name in ("logprobs", "top_logprobs"):
            body.pop(name, None)
    elif "top_logprobs" in body:
        body["top_logprobs"] = min(body["top_logprobs"], tier["top_logprobs"])
    elif isinstance(body.get("logprobs"), int) and not isinstance(body["logprobs"], bool):
        body["logprobs"] = min(body["logprobs"], tier["top_logprobs"])  # completions' count
    if "n" in body:
        body["n"] = min(body["n"], tier["max_n"])
    if "max_tokens" in body:
        body["max_tokens"] = min(body["max_tokens"], tier["max_tokens"])


# Timing ------------------------------------------------------------------------------------


def local_hour(ts: float, offset_h: float) -> float:
    return ((ts / HOUR) + offset_h) % 24


def waking_starts(
    rng: random.Random, start: float, end: float, offset_h: float, per_day: float
) -> list[float]:
    """Session start times of a person: Poisson(``per_day``) a day, at local hours drawn from a
    day with a morning, afternoon and evening hump and nights off."""
    out = []
    day0 = math.floor((start / HOUR + offset_h) / 24) * 24 - offset_h  # local midnight, hours
    day = day0 * HOUR
    while day < end:
        for _ in range(poisson(rng, per_day)):
            hour = rng.choice((rng.gauss(10.5, 1.3), rng.gauss(15, 1.8), rng.gauss(20.5, 1.3)))
            ts = day + min(max(hour, 7.0), 23.5) * HOUR
            if start <= ts < end:
                out.append(ts)
        day += DAY
    return sorted(out)


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method; means here are small)."""
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def think_time(rng: random.Random, median_s: float) -> float:
    """A person reading an answer and typing the next turn: log-normal, a long right tail."""
    return median_s * math.exp(rng.gauss(0, 0.7))


class Workers:
    """Machine timing: ``concurrency`` clients, each sending its next request ``gap_s``
    (± 10 %) after its previous answer came back.

    ``t = w.send()`` gives the next send time; ``w.done(finish)`` reports when it finished.
    """

    def __init__(self, rng: random.Random, start: float, concurrency: int, gap_s: float) -> None:
        self.rng, self.gap_s = rng, gap_s
        self.free = [start + i * 0.05 for i in range(max(concurrency, 1))]
        self.slot = 0

    def send(self) -> float:
        self.slot = min(range(len(self.free)), key=self.free.__getitem__)
        return self.free[self.slot]

    def done(self, finished: float) -> None:
        self.free[self.slot] = finished + self.gap_s * (0.9 + 0.2 * self.rng.random())


class Paced:
    """A script made to look like a person: one request at a time, each ``median_s`` ×
    log-normal(σ) after the previous answer (a long right tail, CV near 1 and above), and with
    ``offset_h`` nights off (nothing from midnight to 7:00 local; it resumes in the morning).
    The same ``send``/``done`` interface as ``Workers``."""

    def __init__(
        self,
        rng: random.Random,
        start: float,
        median_s: float,
        sigma: float = 0.9,
        offset_h: float | None = None,
    ) -> None:
        self.rng, self.median_s, self.sigma, self.offset_h = rng, median_s, sigma, offset_h
        self.next = self._awake(start)

    def _awake(self, ts: float) -> float:
        if self.offset_h is None or local_hour(ts, self.offset_h) >= 7:
            return ts
        return ts + (7 - local_hour(ts, self.offset_h)) * HOUR + self.rng.uniform(0, 2 * HOUR)

    def send(self) -> float:
        return self.next

    def done(self, finished: float) -> None:
        gap = self.median_s * math.exp(self.rng.gauss(0, self.sigma))
        self.next = self._awake(finished + gap)


# Text --------------------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z_][A-Za-z_]{4,}")
_PLAIN_WORDS = "which there their these those about would could should return returns"
_PLAIN = frozenset(_PLAIN_WORDS.split())


def answer(rng: random.Random, corpus: Corpus, target_words: int, doc: Doc | None = None) -> str:
    """An assistant answer of about ``target_words`` words composed from corpus prose: the
    docstring the question was about first, then passages."""
    parts = [" ".join(doc.doc.split())] if doc is not None else []
    while sum(map(words, parts)) < target_words:
        parts.append(rng.choice(corpus.passages))
    return " ".join(" ".join(parts).split()[:target_words])


def terms(text: str, rng: random.Random, count: int) -> list[str]:
    """A few content words of a text (what a follow-up picks up from the answer)."""
    pool = sorted({w for w in _WORD.findall(text) if w.lower() not in _PLAIN})
    return rng.sample(pool, min(count, len(pool))) if pool else ["that"]


FOLLOWUPS = (
    'You said "{quote}" — can you elaborate?',
    "Can you explain that more simply?",
    "Why is that? I thought {a} worked differently.",
    "Could you give an example that uses {a} and {b}?",
    "What is the difference between {a} and {b} here?",
    "Thanks. How does {a} relate to {b} in your answer?",
    "Tell me more about {a}.",
    "That doesn't work for me, what should I do about {a}?",
    "Can you make your answer shorter?",
    "Your answer mentions {a} — is that always true?",
)


def followup(rng: random.Random, previous: str) -> str:
    """A user turn that builds on the previous answer (quotes it or picks up its words)."""
    a, b, *_ = [*terms(previous, rng, 2), "it"]
    quote = " ".join(previous.split()[:8])
    return rng.choice(FOLLOWUPS).format(a=a, b=b, quote=quote)


def question(rng: random.Random, doc: Doc) -> str:
    """A question someone might ask about a standard-library function or class."""
    forms = (
        "What does {q} do?",
        "What does {n} in {m} do?",
        "How do I use {q} in Python?",
        "Can you show me an example of {q}?",
        "When should I use {q} instead of writing it myself?",
        "What arguments does {q} take?",
        "Is {q} safe to use with threads?",
    )
    return rng.choice(forms).format(q=doc.qualname, n=doc.name, m=doc.module)


def ask(rng: random.Random, prompt: Prompt) -> tuple[str, int]:
    """A quickstart prompt as a person types it, and the length of a fitting answer."""
    short = prompt.reference is not None
    return prompt.text, rng.randint(3, 30) if short else rng.randint(40, 220)


_NAME_HEADS = (
    "North", "Blue", "Bright", "Silver", "Red", "Green", "Iron", "Clear", "Swift", "Open",
    "Little", "Grand", "Pine", "Harbor", "Summit", "Cedar", "Maple", "Stone", "Golden", "River",
)  # fmt: skip
_NAME_TAILS = (
    "wind", "field", "stone", "bridge", "leaf", "point", "gate", "line", "works", "wave",
    "brook", "peak", "hill", "path", "light", "forge", "crest", "way", "dale", "port",
)  # fmt: skip
_NAME_KINDS = (
    "Logistics", "Health", "Travel", "Bank", "Retail", "Insurance", "Media", "Labs", "Foods",
    "Energy", "Telecom", "Games", "Legal", "Realty", "Analytics",
)  # fmt: skip


def company(rng: random.Random) -> str:
    """A customer's name ("Northwind Travel"; 6,000 of them): what makes its prompts its own."""
    return f"{rng.choice(_NAME_HEADS)}{rng.choice(_NAME_TAILS)} {rng.choice(_NAME_KINDS)}"


def pick(rng: random.Random, items: Sequence[Any]) -> Any:
    return items[rng.randrange(len(items))]


def draw(rng: random.Random, value: Any) -> Any:
    """A style parameter for one key: a ``(low, high)`` pair is a range to draw from (whole
    numbers when both ends are), anything else is the value itself."""
    if isinstance(value, tuple) and len(value) == 2:
        low, high = value
        if isinstance(low, int) and isinstance(high, int):
            return rng.randint(low, high)
        return rng.uniform(low, high)
    return value
