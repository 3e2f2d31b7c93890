"""Store rows → padded training batches, with targets on completion tokens only.

A row is ``prompt_token_ids + completion_token_ids``. ``labels`` hold the completion tokens at
their positions and -100 elsewhere; ``topk_ids``/``topk_logprobs`` hold, at the same positions,
the teacher's distribution for that token. The loss pairs logits at position t with labels at
t+1 (the usual shift), so both are aligned with ``input_ids`` here and shifted in the loss.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)
IGNORE = -100


@dataclass
class Example:
    """One training sequence (unpadded)."""

    input_ids: list[int]
    labels: list[int]
    topk_ids: list[list[int]] | None  # one list per completion token, aligned to its position
    topk_logprobs: list[list[float]] | None
    prompt_length: int


def examples_from_rows(rows: list[dict[str, Any]], max_seq_len: int) -> list[Example]:
    """Build examples; completions past ``max_seq_len`` are cut, rows with no room dropped."""
    examples = []
    dropped = 0
    for row in rows:
        prompt = list(row["prompt_token_ids"])
        completion = list(row["completion_token_ids"])
        room = max_seq_len - len(prompt)
        if room < 1 or not completion:
            dropped += 1
            continue
        completion = completion[:room]
        topk_ids = row.get("topk_ids") or None
        topk_logprobs = row.get("topk_logprobs") or None
        examples.append(
            Example(
                input_ids=prompt + completion,
                labels=[IGNORE] * len(prompt) + completion,
                topk_ids=topk_ids[: len(completion)] if topk_ids else None,
                topk_logprobs=topk_logprobs[: len(completion)] if topk_logprobs else None,
                prompt_length=len(prompt),
            )
        )
    if dropped:
        log.warning("%d rows dropped: prompt longer than max_seq_len or empty completion", dropped)
    return examples


def collate(examples: list[Example], pad_id: int, top_k: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded batch: ``input_ids``, ``attention_mask``, ``labels`` (B, L), and when
    ``top_k`` > 0, ``topk_ids`` (B, L, k) int64 and ``topk_logprobs`` (B, L, k) float32.

    Positions without teacher data (prompt, padding) hold a uniform distribution over ids
    0..k-1 and the tail: masked out by ``labels`` == -100, and finite, because a masked value
    with an infinite derivative still turns into NaN in backward (0 · ∞) — reverse KL against
    a one-hot did exactly that.
    """
    width = max(len(e.input_ids) for e in examples)
    batch = len(examples)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    labels = torch.full((batch, width), IGNORE, dtype=torch.long)
    out: dict[str, torch.Tensor] = {}
    if top_k:
        topk_ids = torch.arange(top_k).expand(batch, width, top_k).clone()
        topk_logprobs = torch.full((batch, width, top_k), -math.log(top_k + 1))
    for i, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[i, :n] = torch.tensor(example.input_ids)
        attention_mask[i, :n] = 1
        labels[i, :n] = torch.tensor(example.labels)
        if top_k and example.topk_ids:
            start = example.prompt_length
            count = len(example.topk_ids)
            topk_ids[i, start : start + count] = torch.tensor(example.topk_ids)[:, :top_k]
            topk_logprobs[i, start : start + count] = torch.tensor(example.topk_logprobs)[:, :top_k]
    out.update(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    if top_k:
        out.update(topk_ids=topk_ids, topk_logprobs=topk_logprobs)
    return out


@functools.lru_cache(maxsize=4)
def batch_order(count: int, epoch: int, seed: int) -> tuple[int, ...]:
    """The example order of one epoch: a permutation fixed by (seed, epoch), so a resumed run
    sees exactly the batches the uninterrupted one would have."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(count, generator=generator).tolist())


def micro_batch_indices(
    count: int,
    step: int,
    micro: int,
    batch_size: int,
    grad_accum: int,
    seed: int,
    rank: int = 0,
    world: int = 1,
) -> list[int]:
    """Indices of one micro-batch of one process at optimizer ``step`` (0-based).

    The global batch of a step is ``batch_size * grad_accum * world`` consecutive examples of
    the epoch order (wrapping into the next epoch), cut into per-micro, per-rank slices.
    """
    global_size = batch_size * grad_accum * world
    first = step * global_size + (micro * world + rank) * batch_size
    indices = []
    for position in range(first, first + batch_size):
        epoch, offset = divmod(position, count)
        indices.append(batch_order(count, epoch, seed)[offset])
    return indices
