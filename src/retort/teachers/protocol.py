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


# Everything a retort decode does beyond temperature, top-p and seed, recorded in every store's
# fingerprint: tokens are drawn from softmax(logits / T) cut to the user's top-p only (greedy:
# the argmax), with no top-k, min-p, typical or epsilon/eta cut, no penalties, no n-gram bans,
# no beams, and the model's own generation_config ignored apart from its special tokens.
# teachers/decoding.py is what makes a local decode do exactly this.
DECODING: dict[str, Any] = {
    "sampler": "per-row softmax(logits/T) with top_p; greedy = argmax",
    "top_k": 0,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "num_beams": 1,
    "model_generation_config": "ignored",
    "seeding": "one generator per row; capture seeds it from (seed, row id)",
}


@dataclass(frozen=True)
class Sampling:
    """Decoding settings; part of a store's fingerprint."""

    max_new_tokens: int
    temperature: float = 0.0  # 0 → greedy
    top_p: float = 1.0
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The full effective settings: the user's four and every other knob (``DECODING``)."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "decoding": dict(DECODING),
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
