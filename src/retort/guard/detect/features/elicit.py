"""Elicitation: prompts that ask the model to show its reasoning, or to hand it over in a
machine-readable shape — what a reasoning-trace harvest needs and a chat user rarely asks.

Over the window's requests with readable text (user text or system prompt; hashed bodies
say nothing here and are left out):

- ``elicit.cot_share``: share matching ``COT``, case-insensitive patterns of
  chain-of-thought phrases ("step by step", "show your reasoning", "explain your reasoning",
  "think it through", "chain of thought", "reasoning trace", ``<think>``, "before answering",
  "walk me through", "justify each step", ...).
- ``elicit.structured_output_share``: share forcing structured output (``STRUCTURED``:
  "respond in JSON", "as a JSON object", JSON keys such as ``"reasoning":``/``"answer":``,
  "with fields reasoning and answer", ``<answer>`` tags, ...), or setting a JSON
  ``response_format`` when the request carries one.

Neutral until ``MIN_REQUESTS`` readable requests. Each prompt is searched up to
``MAX_CHARS`` characters from each end (phrases sit in instructions, which open or close a
prompt), which bounds the per-request cost.
"""

from __future__ import annotations

import re
from collections import deque
from functools import lru_cache

from retort.guard.detect.features.base import Feature
from retort.guard.detect.request import Request

MIN_REQUESTS = 8
MAX_CHARS = 4000

# Each phrase is (a substring it cannot match without, its pattern), matched against
# lower-cased text: `in` finds the substring at C speed and most prompts stop there. One
# alternation under re.IGNORECASE read every position through every branch: 5-10x slower.
Phrases = tuple[tuple[str, re.Pattern[str]], ...]


def _phrases(*pairs: tuple[str, str]) -> Phrases:
    return tuple((gate, re.compile(pattern)) for gate, pattern in pairs)


COT = _phrases(
    ("step", r"step[\s-]*by[\s-]*step"),
    (
        "show ",
        r"show (?:me )?(?:your |the |all |all of your |each )?(?:work|reasoning|steps|thinking"
        r"|thought process|derivation|logic)",
    ),
    ("explain ", r"explain (?:your|the|each|every) (?:reasoning|thinking|steps?|thought process)"),
    ("think ", r"think (?:it |this |that )?(?:through|carefully|out loud|aloud|hard)"),
    ("chain", r"chain[\s-]of[\s-]thought"),
    ("reasoning ", r"reasoning (?:trace|process|steps|chain|path)"),
    ("before ", r"before (?:answering|you answer|giving (?:your|the|a) (?:final )?answer)"),
    ("through", r"walk (?:me|us) through"),
    ("justify ", r"justify (?:each|every|your|all) (?:step|answer|claim)"),
    ("think", r"let'?s think"),
    ("thought process", r"thought process"),
    ("reason ", r"reason (?:carefully|step|it out)"),
    ("reasoning", r"(?:full|complete|detailed|internal|hidden) reasoning"),
    ("derivation", r"(?:full|complete|detailed) derivation"),
    ("monologue", r"internal monologue"),
    ("pad", r"scratch ?pad"),
    ("out ", r"work (?:it )?out (?:step|carefully)"),
    ("<", r"</?(?:think|thinking|reasoning)>"),
)
STRUCTURED = _phrases(
    ("json", r"\b(?:in|as|with|using) (?:valid |a |an |strict |pure |raw |only )?json\b"),
    ("json", r"json (?:object|format|schema|only)|(?:only|valid|strict) json\b"),
    (
        "with ",
        r"with (?:the )?(?:fields|keys|sections)\b[^.\n]{0,30}?"
        r"\b(?:reasoning|rationale|answer|thought)",
    ),
    (":", r"[\"'](?:reasoning|answer|rationale|thoughts?|explanation|steps|final_answer)[\"']\s*:"),
    ("final answer:", r"final answer:"),
    ("answer in the format", r"answer in the format"),
    ("answer>", r"</?answer>"),
)


def _any(phrases: Phrases, text: str) -> bool:
    return any(gate in text and pattern.search(text) for gate, pattern in phrases)


def _read(text: str) -> tuple[bool, bool]:
    """(asks for reasoning, forces structured output) in ``text``, read within ``MAX_CHARS``
    of either end."""
    if len(text) > 2 * MAX_CHARS:
        text = text[:MAX_CHARS] + "\n" + text[-MAX_CHARS:]
    text = text.lower()
    return _any(COT, text), _any(STRUCTURED, text)


# an app sends the same system prompt with every request: read it once
_read_system = lru_cache(maxsize=256)(_read)


def elicits(request: Request) -> tuple[bool, bool]:
    """(asks for reasoning, forces structured output) for one readable request."""
    cot, structured = _read(request.text) if request.text else (False, False)
    if request.system:
        system = _read_system(request.system)
        cot, structured = cot or system[0], structured or system[1]
    response_format = request.params.get("response_format")
    if isinstance(response_format, dict):
        structured = structured or response_format.get("type") in ("json_object", "json_schema")
    return cot, structured


class Elicitation:
    """Chain-of-thought elicitation and forced structured output."""

    features = (
        Feature(
            "elicit.cot_share",
            "{value:.0%} of prompts ask the model to spell out its reasoning",
            neutral=0.0,
        ),
        Feature(
            "elicit.structured_output_share",
            "{value:.0%} of prompts force a structured (JSON, tagged) answer",
            neutral=0.0,
        ),
    )

    def __init__(self) -> None:
        self.kinds: deque[tuple[bool, bool] | None] = deque()  # None: nothing readable
        self.readable = self.cot = self.structured = 0

    def add(self, request: Request) -> None:
        if request.hashed or not (request.text or request.system):
            self.kinds.append(None)
            return
        kind = elicits(request)
        self.kinds.append(kind)
        self.readable += 1
        self.cot += kind[0]
        self.structured += kind[1]

    def evict(self, request: Request) -> None:
        kind = self.kinds.popleft()
        if kind is not None:
            self.readable -= 1
            self.cot -= kind[0]
            self.structured -= kind[1]

    def values(self) -> dict[str, float]:
        out = {f.name: f.neutral for f in self.features}
        if self.readable >= MIN_REQUESTS:
            out["elicit.cot_share"] = self.cot / self.readable
            out["elicit.structured_output_share"] = self.structured / self.readable
        return out
