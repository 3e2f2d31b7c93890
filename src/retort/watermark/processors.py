"""Watermarks as transformers logits processors: ``__call__(input_ids (B, T), scores (B, V))``.

- :class:`KGWProcessor` adds delta to the green logits of each row's context and leaves the
  choice to what follows it: retort's ``RowSampler`` (sampling, which must stay last) or
  greedy search (the argmax of the biased logits). selfhash tests the green rule on the top
  ``SELFHASH_CANDIDATES`` ids only, as Kirchenbauer et al.'s reference implementation does,
  since each candidate needs its own seed; ids below them are never boosted.
- :class:`GumbelProcessor` replaces sampling (Aaronson's Gumbel-max): the next token is the
  argmax over the top-p nucleus of u_t ** (1 / p_t), p the model's probabilities at the
  requested temperature; it returns 0 at the chosen id and -inf elsewhere, as ``RowSampler``
  does. Each step picks t with probability p_t exactly (over the key), so a single step is
  distortion-free; the same context and distribution always give the same token, though,
  which a dual key softens: each row draws, at each step, which of the two secrets to use,
  from its own seed (Python's ``random.Random``, CPU only). Temperature 0 is refused: greedy
  decoding leaves no room for a Gumbel watermark (use a kgw key for greedy output).

Contexts are the last ``key.history`` ids of each row of ``input_ids``. Rows are independent,
so batching and left padding leave a row's output unchanged: the ids before generation are the
prompt's real final tokens. Only a prompt shorter than the history would read pad ids into
its context; ``row_starts`` (the index of each row's first real id, which ``LocalTeacher``
passes) makes such a context its real ids only, as the row alone would have it.

``scores.shape[-1]`` is the truth about the vocabulary: a model's embedding rows may outnumber
its tokenizer's ids, and the PRF is defined for every id. The processors never write into
``scores``: transformers keeps that tensor as the raw logits (``output_logits``), so the logprobs
retort stores are the model's own, before any watermark.
"""

from __future__ import annotations

import math
import random
import secrets
from collections.abc import Sequence

import numpy as np
import torch
from transformers import LogitsProcessor

from retort.errors import ConfigError
from retort.teachers.decoding import nucleus, sampler_for
from retort.watermark.keys import Key

SELFHASH_CANDIDATES = 40  # ids tested per step by selfhash (the reference tests ~40)


def row_contexts(
    input_ids: torch.Tensor, history: int, row_starts: Sequence[int] | None = None
) -> list[tuple[int, ...]]:
    """The last ``history`` ids of each row, cut at ``row_starts[row]`` when given."""
    first = max(0, input_ids.shape[1] - history)
    tails = input_ids[:, first:].tolist()  # (B, <= history)
    if row_starts is None:
        return [tuple(row) for row in tails]
    pairs = zip(tails, row_starts, strict=True)
    return [tuple(row[max(0, start - first) :]) for row, start in pairs]


class KGWProcessor(LogitsProcessor):
    """Adds ``key.delta`` to the logits of each row's green ids (Kirchenbauer et al.)."""

    def __init__(self, key: Key, row_starts: Sequence[int] | None = None) -> None:
        if key.scheme != "kgw":
            raise ConfigError(f"{key.name}: a {key.scheme} key, not kgw")
        self.key, self.row_starts = key, row_starts
        self._prf = key.prfs[0]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]
        contexts = row_contexts(input_ids, self.key.history, self.row_starts)
        if self.key.seeding == "lefthash":
            masks = [self._mask(context, vocab) for context in contexts]
        else:
            rows = zip(contexts, scores, strict=True)
            masks = [self._selfhash_mask(context, row, vocab) for context, row in rows]
        green = torch.from_numpy(np.stack(masks)).to(scores.device)  # (B, V) bool
        return torch.where(green, scores + self.key.delta, scores)  # a new tensor: see module

    def _mask(self, context: tuple[int, ...], vocab: int) -> np.ndarray:
        mask = self._prf.green_masks.get((context, vocab))
        if mask is None:
            mask = self._prf.uniforms(context, vocab) < self.key.gamma  # (V,)
            self._prf.green_masks.put((context, vocab), mask)
        return mask

    def _selfhash_mask(self, context: tuple[int, ...], row: torch.Tensor, vocab: int) -> np.ndarray:
        candidates = row.topk(min(SELFHASH_CANDIDATES, vocab)).indices.cpu().numpy()  # (K,)
        mask = np.zeros(vocab, dtype=bool)
        mask[candidates[self._prf.uniforms(context, candidates) < self.key.gamma]] = True
        return mask


class GumbelProcessor(LogitsProcessor):
    """Writes argmax over the top-p nucleus of u ** (1 / p) (Aaronson's Gumbel-max).

    Args:
        key: a gumbel key.
        temperature: > 0; p = softmax(scores / temperature).
        top_p: the nucleus kept (``decoding.nucleus``: the same cut as ``RowSampler``).
        seeds: one per row; a dual key draws each step's secret from them (fresh ones from
            the OS when not given). Unused by single keys.
        row_starts: index of each row's first real id (see the module docstring).
    """

    def __init__(
        self,
        key: Key,
        temperature: float,
        top_p: float = 1.0,
        seeds: Sequence[int] | None = None,
        row_starts: Sequence[int] | None = None,
    ) -> None:
        if key.scheme != "gumbel":
            raise ConfigError(f"{key.name}: a {key.scheme} key, not gumbel")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ConfigError(
                f"temperature {temperature}: a gumbel watermark samples (Gumbel-max) and needs "
                "temperature > 0 (1 keeps the model's distribution); use a kgw key for greedy"
            )
        if not 0 < top_p <= 1:
            raise ConfigError(f"top_p {top_p}: must be in (0, 1]")
        self.key, self.temperature, self.top_p = key, temperature, top_p
        self.seeds, self.row_starts = seeds, row_starts
        self._pickers: list[random.Random] | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]
        contexts = row_contexts(input_ids, self.key.history, self.row_starts)
        which = self._secrets_this_step(len(contexts))
        u = np.stack([self._uniforms(c, vocab, w) for c, w in zip(contexts, which, strict=True)])
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)  # (B, V)
        if self.top_p < 1.0:
            probs = nucleus(probs, self.top_p)
        p = probs.cpu().double().numpy()  # (B, V); float64 on the host, whatever the device
        with np.errstate(divide="ignore"):  # u = 0 (odds 2**-53) and p = 0 rank as -inf
            ranks = np.where(p > 0, np.log(u) / np.where(p > 0, p, 1.0), -np.inf)  # (B, V)
        chosen = torch.from_numpy(ranks.argmax(-1)).to(scores.device)  # (B,)
        out = torch.full_like(scores, -float("inf"))
        return out.scatter_(1, chosen[:, None], 0.0)

    def _secrets_this_step(self, rows: int) -> list[int]:
        if not self.key.dual:
            return [0] * rows
        if self._pickers is None:
            seeds = self.seeds or [secrets.randbits(63) for _ in range(rows)]
            self._pickers = [random.Random(s) for s in seeds]
        return [picker.getrandbits(1) for picker in self._pickers]

    def _uniforms(self, context: tuple[int, ...], vocab: int, which: int) -> np.ndarray:
        prf = self.key.prfs[which]
        u = prf.uniform_vectors.get((context, vocab))
        if u is None:
            u = prf.uniforms(context, vocab)  # (V,)
            prf.uniform_vectors.put((context, vocab), u)
        return u


def watermark_processors(
    key: Key,
    temperature: float,
    top_p: float,
    seeds: Sequence[int],
    row_starts: Sequence[int] | None = None,
) -> list[LogitsProcessor]:
    """The processors of a watermarked decode, in order: kgw → [KGW, then the sampler (none
    for greedy)]; gumbel → [Gumbel], which samples itself.

    Raises:
        ConfigError: a gumbel key with temperature 0.
    """
    if key.scheme == "kgw":
        return [KGWProcessor(key, row_starts), *sampler_for(temperature, top_p, seeds)]
    return [GumbelProcessor(key, temperature, top_p, seeds, row_starts)]
