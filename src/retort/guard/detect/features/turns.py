"""Turns: does the key hold conversations, or fire one-off questions?

Over the window's generation requests (``/v1/chat/completions`` and ``/v1/completions``):

- ``turns.single_turn_share``: share with one user turn and no assistant history (every
  completion is single-turn). Harvesting sends fresh questions; people follow up.
- ``turns.followup_reference_share``: of the multi-turn requests (with assistant history),
  the share whose user text refers back to the last assistant answer: a phrase such as "you
  said", "your answer", "above", "can you elaborate" within ``PHRASE_CHARS`` of either end
  of the text, or word overlap: at least ``OVERLAP_WORDS`` content words (4+ letters or
  digits, not stop words) shared with that answer, making up at least ``OVERLAP_SHARE`` of
  the user's content words. A fake history pasted in front of unrelated questions does not
  refer back. Neutral until ``MIN_MULTI_TURN`` multi-turn requests; hashed bodies are not
  read for it (a digest says nothing). Both texts are read up to ``READ_CHARS``.

``single_turn_share`` is neutral until ``MIN_REQUESTS`` generation requests.
"""

from __future__ import annotations

import re
from collections import deque

from retort.guard.detect.features.base import Feature
from retort.guard.detect.request import Request

MIN_REQUESTS = 8
MIN_MULTI_TURN = 4
OVERLAP_WORDS = 2
OVERLAP_SHARE = 0.25
# bounds on what is read per request; a follow-up says "you said" near its start or end
READ_CHARS, PHRASE_CHARS = 4000, 400

REFERENCE = re.compile(
    r"\b(?:you (?:said|mentioned|wrote|suggested|gave|showed|listed|used|meant)"
    r"|your (?:previous |last |earlier |first |second )?"
    r"(?:answer|response|reply|explanation|example|code|suggestion|point|list|solution)"
    r"|(?:said|mentioned|wrote|shown|listed|above) (?:above|earlier|before)"
    r"|above|earlier|previous (?:answer|response|one|example)"
    r"|th(?:at|is|ose|ese) (?:answer|example|code|list|explanation|step|steps|point|one)"
    r"|(?:can|could) you (?:expand|elaborate|clarify|explain that|explain it|rephrase)"
    r"|what do you mean|elaborate|go on|tell me more|why is that|instead|that works"
    r"|doesn't work|didn't work|still (?:get|getting|fails|doesn't))\b",
)  # matched against lower-cased text: re.IGNORECASE made it several times slower
WORD = re.compile(r"[a-z0-9]{4,}")
_STOP_WORDS = (
    "about above after again also because been before being between both could does doing "
    "down during each from further have having here into itself just more most much must "
    "once only other over same should some such than that their them then there these "
    "they this those through under until very were what when where which while will with "
    "would your yours please thanks thank"
)
STOP = frozenset(_STOP_WORDS.split())
GENERATION = ("/v1/chat/completions", "/v1/completions")


def content_words(text: str) -> set[str]:
    """Lower-cased words of 4+ letters or digits, stop words dropped."""
    return {w for w in WORD.findall(text.lower()) if w not in STOP}


def refers_back(text: str, answer: str) -> bool:
    """Whether a user turn refers to the assistant answer before it."""
    text = text[:READ_CHARS]
    ends = (
        text if len(text) <= 2 * PHRASE_CHARS else text[:PHRASE_CHARS] + "\n" + text[-PHRASE_CHARS:]
    )
    if REFERENCE.search(ends.lower()):
        return True
    asked = content_words(text)
    if not asked:
        return False
    shared = len(asked & content_words(answer[:READ_CHARS]))
    return shared >= OVERLAP_WORDS and shared >= OVERLAP_SHARE * len(asked)


def _kind(request: Request) -> tuple[bool, bool, bool, bool]:
    """(generation request, single-turn, readable multi-turn, multi-turn referring back)."""
    if not request.endpoint.endswith(GENERATION):
        return False, False, False, False
    single = request.user_turns <= 1 and not request.history
    multi = bool(request.history) and not request.hashed
    refers = multi and refers_back(request.text, request.history[-1])
    return True, single, multi, refers


class Turns:
    """Single-turn share and follow-ups that build on the answer before."""

    features = (
        Feature(
            "turns.single_turn_share",
            "{value:.0%} of requests are one-off questions with no conversation",
            neutral=0.5,
        ),
        Feature(
            "turns.followup_reference_share",
            "only {value:.0%} of follow-ups refer back to the previous answer",
            neutral=0.5,
        ),
    )

    def __init__(self) -> None:
        # per request: (generation, single-turn, multi-turn readable, refers back)
        self.kinds: deque[tuple[bool, bool, bool, bool]] = deque()
        self.generation = self.single = self.multi = self.refers = 0

    def _count(self, kind: tuple[bool, bool, bool, bool], sign: int) -> None:
        generation, single, multi, refers = kind
        self.generation += sign * generation
        self.single += sign * single
        self.multi += sign * multi
        self.refers += sign * refers

    def add(self, request: Request) -> None:
        kind = _kind(request)
        self.kinds.append(kind)
        self._count(kind, +1)

    def evict(self, request: Request) -> None:
        self._count(self.kinds.popleft(), -1)

    def values(self) -> dict[str, float]:
        out = {f.name: f.neutral for f in self.features}
        if self.generation >= MIN_REQUESTS:
            out["turns.single_turn_share"] = self.single / self.generation
        if self.multi >= MIN_MULTI_TURN:
            out["turns.followup_reference_share"] = self.refers / self.multi
        return out
