"""The Teacher protocol: what a teacher can do, declared before work starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; checked up front so a run never fails halfway for lack of it."""

    generate: bool  # completions with token ids and top-k logprobs
    score: bool  # top-k logprobs of given token sequences, teacher-forced
    logits: bool  # full-vocabulary logits / hidden states (local only)
    max_top_k: int


@dataclass(frozen=True)
class Sampling:
    """Decoding settings; part of a store's fingerprint."""

    max_new_tokens: int
    temperature: float = 0.0  # 0 → greedy
    top_p: float = 1.0
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }


@dataclass
class Generation:
    """One completion. ``topk_*[i]`` is the teacher's distribution for ``completion_ids[i]``.

    Logprobs are the teacher's own (log-softmax of raw logits, temperature 1), whatever the
    sampling temperature: that is the distribution a student is distilled towards.
    """

    completion_ids: list[int]
    finish_reason: str  # "stop" (EOS written, and kept as the last id) | "length"
    topk_ids: list[list[int]] = field(default_factory=list)
    topk_logprobs: list[list[float]] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)  # of each written token


@dataclass
class Scored:
    """Teacher-forced logprobs of a given sequence; position i scores token i + 1."""

    token_logprobs: list[float]  # of the actual next token
    ranks: list[int]  # 1 = the teacher's most likely token
    topk_ids: list[list[int]]
    topk_logprobs: list[list[float]]


class Teacher(Protocol):
    """A model that writes completions (and says how likely each token was)."""

    capabilities: Capabilities
    tokenizer: PreTrainedTokenizerBase

    def identity(self) -> dict[str, Any]:
        """Teacher name and weights hash or revision, for the store fingerprint."""
        ...

    def generate(
        self, prompts: list[list[int]], sampling: Sampling, top_k: int
    ) -> list[Generation]:
        """Complete a batch of tokenized prompts; one ``Generation`` per prompt, in order."""
        ...
