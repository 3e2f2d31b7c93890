"""On-policy distillation (GKD): the student writes, the teacher grades every token it wrote.

Per micro-batch a coin with probability ``lmbda`` decides whether the batch's prompts are
completed by the student (sampled with its KV cache, under no_grad) or keep the teacher's stored
completions. Either way the KD term is the chosen divergence against the teacher on those
tokens — a local teacher's full distribution, or an HTTP teacher's top-k (remote_teacher.py) —
so λ = 0 is online KD on the store and λ = 1 is pure on-policy distillation.

Coins and samples are functions of (seed, step, micro-batch, process): a resumed run draws
exactly what the uninterrupted one drew, with no generator state to save.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from transformers import LogitsProcessor

from retort.teachers.decoding import clean_config, derive_seed, generate_exactly, sampler_for
from retort.teachers.local import left_pad
from retort.train.data import IGNORE, Example


def _generator_seed(seed: int, step: int, micro: int, rank: int, salt: int) -> int:
    """A 63-bit seed for one (step, micro-batch, process, purpose), whatever the run's seed."""
    key = f"{seed}:{step}:{micro}:{rank}:{salt}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1


def student_samples(seed: int, step: int, micro: int, lmbda: float) -> bool:
    """The coin of one micro-batch; the same on every process, so all sample or none do."""
    if lmbda >= 1.0:
        return True
    generator = torch.Generator().manual_seed(_generator_seed(seed, step, micro, 0, 1))
    return bool(torch.rand((), generator=generator) < lmbda)


@torch.no_grad()
def sample_completions(
    model: Any,
    prompts: list[list[int]],
    pad_id: int,
    eos_ids: list[int],
    max_new_tokens: int,
    temperature: float,
    seed: int,
    vocab_size: int | None = None,
) -> list[list[int]]:
    """Completions of ``prompts`` sampled from the student's own softmax(logits / T) — no top-k,
    top-p or penalty, whatever its ``generation_config`` ships — each cut after its first EOS
    (kept). Row i samples with a generator seeded from (``seed``, i); the global RNG is not
    touched. With ``vocab_size``, ids at or past it (embedding rows the teacher lacks) are
    never sampled."""
    device = next(model.parameters()).device
    input_ids, attention_mask = left_pad(prompts, pad_id)
    cap = [VocabCap(vocab_size)] if vocab_size else []
    seeds = [derive_seed(seed, row) for row in range(len(prompts))]
    was_training = model.training
    model.eval()
    try:
        out = generate_exactly(
            model,
            input_ids.to(device),
            attention_mask.to(device),
            clean_config(max_new_tokens, pad_id, eos_ids),
            [*cap, *sampler_for(temperature, 1.0, seeds)],  # the cap first: never sampled
        )
    finally:
        model.train(was_training)
    completions = []
    for tokens in out[:, input_ids.shape[1] :].tolist():
        end = next((i + 1 for i, t in enumerate(tokens) if t in eos_ids), len(tokens))
        completions.append(tokens[:end])
    return completions


def on_policy_examples(
    examples: list[Example],
    model: Any,
    pad_id: int,
    eos_ids: list[int],
    max_new_tokens: int,
    temperature: float,
    seed: int,
    max_seq_len: int,
    vocab_size: int | None = None,
) -> list[Example]:
    """The examples' prompts with the student's sampled completions as targets (cut to fit
    ``max_seq_len``)."""
    prompts = [e.input_ids[: e.prompt_length] for e in examples]
    room = max_seq_len - min(len(p) for p in prompts)  # no point writing what is cut below
    completions = sample_completions(
        model,
        prompts,
        pad_id,
        eos_ids,
        min(max_new_tokens, room),
        temperature,
        seed,
        vocab_size,
    )
    return [
        Example(
            input_ids=prompt + completion,
            labels=[IGNORE] * len(prompt) + completion,
            topk_ids=None,
            topk_logprobs=None,
            prompt_length=len(prompt),
        )
        for prompt, completion in zip(prompts, completions, strict=True)
        for completion in [completion[: max_seq_len - len(prompt)]]
    ]


def seed_of_samples(seed: int, step: int, micro: int, rank: int) -> int:
    return _generator_seed(seed, step, micro, rank, 2)


class VocabCap(LogitsProcessor):
    """Masks logits of ids >= ``size``: a student whose embedding matrix is padded past the
    teacher's must not write ids the teacher cannot score."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[-1] > self.size:
            scores = scores.clone()
            scores[:, self.size :] = -float("inf")
        return scores
