"""Greedy generation speed, measured the same way for every model in one process."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from retort.teachers.decoding import clean_config, generate_exactly
from retort.teachers.local import left_pad

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@torch.no_grad()
def tokens_per_second(
    model: PreTrainedModel,
    prompts: list[list[int]],
    batch_size: int,
    new_tokens: int,
    pad_id: int,
) -> float:
    """New tokens per second of greedy decoding with the KV cache, ``batch_size`` rows at once.

    Every row writes exactly ``new_tokens`` (EOS ignored), so models are timed on equal work.
    One short warm-up call first keeps one-time costs out of the figure.
    """
    rows = [prompts[i % len(prompts)] for i in range(batch_size)]
    input_ids, attention_mask = (t.to(model.device) for t in left_pad(rows, pad_id))
    eos = model.generation_config.eos_token_id

    def decode(tokens: int) -> None:
        # Exactly ``tokens`` per row (EOS blocked) of plain greedy search: the model's own
        # generation_config (beams, penalties) must not change the work being timed.
        config = clean_config(tokens, pad_id, eos, min_new_tokens=tokens)
        generate_exactly(model, input_ids, attention_mask, config)

    model.eval()
    decode(2)
    _synchronize(model.device)
    start = time.perf_counter()
    decode(new_tokens)
    _synchronize(model.device)
    return batch_size * new_tokens / (time.perf_counter() - start)


def _synchronize(device: torch.device) -> None:
    """GPU work is asynchronous: wait for it, so the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
