"""Decoding exactly from a model's own distribution, whatever its ``generation_config`` says.

transformers 5 fills every generation setting left ``None`` from ``model.generation_config`` (a
hub checkpoint's top_k, top_p, repetition_penalty, suppress_tokens, num_beams, ...) and then
from global defaults (top_k=50). Every caller in retort that decodes (capture, on-policy
sampling, evaluation, serve) goes through :func:`generate_exactly`, which shuts both out:

- transformers only ever runs greedy search, with every logits processor it adds in greedy mode
  set to its neutral value (:data:`NEUTRAL`);
- during the call the model's ``generation_config`` is swapped for one that keeps only its
  special tokens, so nothing left ``None`` (min_p, suppress_tokens, sequence_bias, forced ids,
  watermarking, beams, DoLa, prompt lookup, ...) is inherited from the checkpoint;
- sampling is :class:`RowSampler`'s: it draws each row's token from softmax(logits / T), cut to
  the user's top-p only, with that row's own generator, and leaves only the drawn token finite,
  so greedy search writes it and a row's draw never depends on the other rows of its batch.

The raw logits transformers returns (``output_logits``) are taken before any processor, so the
logprobs stored are the model's own at temperature 1, and greedy writes their argmax.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from retort.errors import ConfigError
from retort.teachers.protocol import DECODING

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# What transformers applies in greedy mode unless told otherwise, each at its neutral value.
# Sampling-only warpers (temperature, top_k, top_p, min_p, typical_p, epsilon/eta) never run in
# greedy mode: RowSampler does all the sampling, as ``DECODING`` (the fingerprint) says.
NEUTRAL: dict[str, Any] = {
    "do_sample": False,
    "num_beams": DECODING["num_beams"],
    "num_return_sequences": 1,
    "repetition_penalty": DECODING["repetition_penalty"],
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": DECODING["no_repeat_ngram_size"],
    "encoder_no_repeat_ngram_size": 0,
    "length_penalty": 1.0,
    "renormalize_logits": False,
    "remove_invalid_values": False,
}

# The only entries of a model's generation_config that survive: which ids pad, start and end.
SPECIAL_TOKENS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed that is a stable function of ``parts`` (ints, strings, lists of ids)."""
    key = json.dumps(parts, separators=(",", ":")).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1


def row_seeds(seed: int, prompts: Sequence[Sequence[int]]) -> list[int]:
    """One seed per row from the run's seed and the row's prompt, so a prompt's sample does not
    depend on its batch (or on a resumed run batching differently); a prompt repeated within the
    batch gets a fresh stream for each repeat."""
    seen: dict[tuple[int, ...], int] = {}
    seeds = []
    for prompt in prompts:
        key = tuple(prompt)
        repeat = seen.get(key, 0)
        seen[key] = repeat + 1
        seeds.append(derive_seed(seed, list(key), repeat))
    return seeds


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """``probs`` (B, V) with everything outside each row's top-p nucleus set to 0: the smallest
    set of most likely ids holding at least ``top_p`` of the mass (the top id always stays).
    Ids tied with the least likely kept one are kept too, so the nucleus is a function of the
    distribution, not of how a sort orders equal values."""
    ordered, _ = probs.sort(dim=-1, descending=True)  # (B, V)
    above = ordered.cumsum(-1) - ordered  # mass ranked strictly above each id
    boundary = ordered.masked_fill(above >= top_p, float("inf")).amin(-1, keepdim=True)  # (B, 1)
    return probs.masked_fill(probs < boundary, 0.0)


class RowSampler(LogitsProcessor):
    """Draws each row's next token from softmax(scores / temperature), cut to ``top_p``, with
    the row's own generator; returns scores that are 0 at the drawn id and -inf elsewhere, so
    greedy search writes exactly the draw.

    Put it last: processors before it (a vocabulary cap, a watermark) shape what is sampled.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float = 1.0) -> None:
        if not (math.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"temperature {temperature}: sampling needs temperature > 0")
        if not 0 < top_p <= 1:
            raise ConfigError(f"top_p {top_p}: must be in (0, 1]")
        self.seeds = list(seeds)
        self.temperature = temperature
        self.top_p = top_p
        self._generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self._generators is None:  # on the logits' device: no host copy of (B, V) per step
            self._generators = [
                torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds
            ]
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)  # (B, V)
        if self.top_p < 1.0:
            probs = nucleus(probs, self.top_p)
        drawn = torch.cat(
            [
                torch.multinomial(p, 1, generator=g)
                for p, g in zip(probs, self._generators, strict=True)
            ]
        )  # (B,)
        chosen = torch.full_like(scores, -float("inf"))
        return chosen.scatter_(1, drawn[:, None], 0.0)


def sampler_for(temperature: float, top_p: float, seeds: Sequence[int]) -> list[LogitsProcessor]:
    """``[RowSampler]`` for temperature > 0, ``[]`` for greedy (temperature 0)."""
    if temperature == 0:
        return []
    return [RowSampler(seeds, temperature, top_p)]


def clean_config(
    max_new_tokens: int,
    pad_token_id: int | None,
    eos_token_id: int | list[int] | None,
    *,
    min_new_tokens: int = 0,
    output_logits: bool = False,
) -> GenerationConfig:
    """A generation config with every knob that changes what greedy search writes set to its
    neutral value, so nothing is filled in from the model or transformers' defaults.

    ``min_new_tokens`` (EOS blocked until then) also fixes transformers' ``min_length``.
    """
    return GenerationConfig(
        **NEUTRAL,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        use_cache=True,
        output_logits=output_logits,
        return_dict_in_generate=output_logits,
    )


def generate_exactly(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    config: GenerationConfig,
    processors: Sequence[LogitsProcessor] = (),
    streamer: Any = None,
) -> Any:
    """``model.generate`` under ``config`` (from :func:`clean_config`) and ``processors`` only
    (end them with ``sampler_for(...)`` to sample): the model's ``generation_config`` is
    replaced by its special tokens for the duration of the call, and restored after."""
    with _only_special_tokens(model):
        return model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            logits_processor=LogitsProcessorList(processors),
            streamer=streamer,
            synced_gpus=synced_generation(model),
        )


def synced_generation(model: Any) -> bool | None:
    """``synced_gpus`` for ``generate``: True for an FSDP-sharded model with several processes
    (one that stopped decoding early would leave the others waiting in a gather of layers);
    None otherwise, where transformers decides as it always did."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        return None
    import torch.distributed as dist

    return dist.is_initialized() and dist.get_world_size() > 1


_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


@contextmanager
def _only_special_tokens(model: Any) -> Iterator[None]:
    """Swap the ``generation_config`` of ``model`` and of every module inside it (a PEFT wrapper
    generates through its base model) for one that carries only the special tokens. One call at
    a time per model, so two threads never restore each other's swap."""
    with _locks_guard:
        lock = _locks.setdefault(model, threading.Lock())
    with lock:
        holders = [
            m
            for m in model.modules()  # the model itself comes first
            if isinstance(getattr(m, "generation_config", None), GenerationConfig)
        ]
        originals = [m.generation_config for m in holders]
        try:
            for holder, original in zip(holders, originals, strict=True):
                holder.generation_config = GenerationConfig(
                    **{k: getattr(original, k, None) for k in SPECIAL_TOKENS}
                )
            yield
        finally:
            for holder, original in zip(holders, originals, strict=True):
                holder.generation_config = original
