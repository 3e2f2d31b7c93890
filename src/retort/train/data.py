"""Store rows → padded training batches, with targets on completion tokens only.

A row is ``prompt_token_ids + completion_token_ids``. ``labels`` hold the completion tokens at
their positions and -100 elsewhere; ``topk_ids``/``topk_logprobs`` hold, at the same positions,
the teacher's distribution for that token. The loss pairs logits at position t with labels at
t+1 (the usual shift), so both are aligned with ``input_ids`` here and shifted in the loss.

Missing teacher data is never made up. A row's top-k must have one (possibly empty) position
per completion token, or the row is refused (``StoreError`` naming it). A completion token
without teacher top-k (an empty position: the end token an OpenAI-style server gave no logprobs
for; or a row captured without top-k) keeps its label, so cross-entropy trains it, and gets
all-``-inf`` top-k logprobs, which ``losses.sparse`` reads as "no teacher data": no KD term.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

from retort.errors import StoreError

log = logging.getLogger(__name__)
IGNORE = -100


@dataclass
class Example:
    """One training sequence (unpadded)."""

    input_ids: list[int]
    labels: list[int]
    topk_ids: list[list[int]] | None  # one list per completion token ([]: no teacher data)
    topk_logprobs: list[list[float]] | None
    prompt_length: int
    # cross_tokenizer only (crosstok/targets.py), one entry per completion token
    uld_head: list[int] | None = None  # -1, or the completion index of the group's first token
    uld_logprobs: list[list[float]] | None = None  # the teacher's sorted top-k, at first tokens
    uld_chain: list[float] | None = None  # log P(the teacher's other tokens of the group)
    # cross_tokenizer with a live teacher: the row it scores each time the example is drawn
    row: dict[str, Any] | None = None


def examples_from_rows(
    rows: list[dict[str, Any]], max_seq_len: int, keep_rows: bool = False
) -> list[Example]:
    """Build examples; completions past ``max_seq_len`` are cut, rows with no room dropped;
    with ``keep_rows`` each example holds its row (``Example.row``).

    Raises:
        StoreError: a row's top-k does not line up with its completion tokens.
    """
    examples = []
    dropped = without_topk = with_topk = 0
    for row in rows:
        prompt = list(row["prompt_token_ids"])
        completion = list(row["completion_token_ids"])
        topk_ids = row.get("topk_ids") or None
        topk_logprobs = row.get("topk_logprobs") or None
        _check_topk(row, completion, topk_ids, topk_logprobs)
        with_topk += topk_ids is not None
        without_topk += topk_ids is None and bool(completion)
        room = max_seq_len - len(prompt)
        if room < 1 or not completion:
            dropped += 1
            continue
        completion = completion[:room]
        examples.append(
            Example(
                input_ids=prompt + completion,
                labels=[IGNORE] * len(prompt) + completion,
                topk_ids=topk_ids[: len(completion)] if topk_ids else None,
                topk_logprobs=topk_logprobs[: len(completion)] if topk_logprobs else None,
                prompt_length=len(prompt),
                **_uld_fields(row, len(completion)),
                row=row if keep_rows else None,
            )
        )
    if dropped:
        log.warning("%d rows dropped: prompt longer than max_seq_len or empty completion", dropped)
    if with_topk and without_topk:
        log.warning(
            "%d of %d rows have no teacher top-k: their tokens get no KD target, only "
            "cross-entropy (capture them again to distill them)",
            without_topk,
            with_topk + without_topk,
        )
    return examples


def _uld_fields(row: dict[str, Any], kept: int) -> dict[str, Any]:
    """A cross-tokenizer row's ULD targets for its first ``kept`` completion tokens; a group
    the cut splits is dropped whole (its other half would be missing from the student's side)."""
    heads = row.get("uld_head")
    if heads is None:
        return {}
    heads = list(heads[:kept])
    logprobs = list(row["uld_logprobs"][:kept])
    if kept < len(row["uld_head"]) and 0 <= row["uld_head"][kept] < kept:
        cut = row["uld_head"][kept]
        heads = [-1 if h == cut else h for h in heads]
        logprobs[cut] = []
    return {"uld_head": heads, "uld_logprobs": logprobs, "uld_chain": row["uld_chain"][:kept]}


def _check_topk(
    row: dict[str, Any],
    completion: list[int],
    topk_ids: list[list[int]] | None,
    topk_logprobs: list[list[float]] | None,
) -> None:
    """Refuse a row whose top-k does not give one position per completion token."""
    if topk_ids is None and topk_logprobs is None:
        return
    where = f"store row {row.get('id')!r}"
    fix = "capture this row again (or remove it from the store)"
    ids_n, lps_n = len(topk_ids or []), len(topk_logprobs or [])
    if ids_n != len(completion) or lps_n != len(completion):
        raise StoreError(
            f"{where}: top-k ids for {ids_n} and logprobs for {lps_n} positions, but "
            f"{len(completion)} completion tokens; {fix}"
        )
    for position, (ids, logprobs) in enumerate(zip(topk_ids, topk_logprobs, strict=True)):
        if len(ids) != len(logprobs):
            raise StoreError(
                f"{where}: top-k position {position} has {len(ids)} ids and "
                f"{len(logprobs)} logprobs; {fix}"
            )


def collate(
    examples: list[Example],
    pad_id: int,
    top_k: int = 0,
    uld: bool = False,
    pack: bool = False,
    pack_width: int = 0,
) -> dict[str, torch.Tensor]:
    """Right-padded batch: ``input_ids``, ``attention_mask``, ``labels`` (B, L), and when
    ``top_k`` > 0, ``topk_ids`` (B, L, k) int64 and ``topk_logprobs`` (B, L, k) float32.
    With ``uld`` (cross_tokenizer) also ``uld_head`` (B, L) int64 (-1, or the sequence position
    of the group's first token), ``uld_logprobs`` (B, L, k) (``-inf`` filler) and ``uld_chain``
    (B, L).

    With ``pack`` the examples share rows (``pack_rows``) of up to ``pack_width`` tokens (at
    least the longest example's): fewer rows, and
    ``position_ids`` restarting at 0 for each example in place of ``attention_mask``, from
    which transformers builds attention that keeps packed examples apart. The first label of
    each example is ignored, as the shift drops it from an unpacked row: no position predicts
    across two examples.

    Positions without teacher data (prompt, padding, completion tokens with an empty or no
    top-k) hold ids 0..k-1 with logprobs all ``-inf``: ``losses.sparse`` reads that as "no
    teacher data" and gives them no KD term and no gradient (it computes them on a finite
    stand-in, because a masked value with an infinite derivative still turns into NaN in
    backward, 0 · ∞). A position with fewer than k entries is padded with ``-inf`` entries,
    which join the tail bucket exactly as if they were not listed.
    """
    lengths = [len(e.input_ids) for e in examples]
    width = max(lengths)
    places = None
    if pack:
        places = pack_rows(lengths, max(width, pack_width))
        width = max(start + lengths[i] for i, (_, start) in enumerate(places))
    batch = len(examples) if places is None else 1 + max(row for row, _ in places)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    labels = torch.full((batch, width), IGNORE, dtype=torch.long)
    out: dict[str, torch.Tensor] = {}
    if top_k:
        topk_ids = torch.arange(top_k).expand(batch, width, top_k).clone()
        topk_logprobs = torch.full((batch, width, top_k), -math.inf)
    for i, example in enumerate(examples):
        row, start = (i, 0) if places is None else places[i]
        n = len(example.input_ids)
        span = slice(start, start + n)
        input_ids[row, span] = torch.tensor(example.input_ids)
        attention_mask[row, span] = 1
        labels[row, span] = torch.tensor(example.labels)
        labels[row, start] = IGNORE  # never a target: no earlier position of its own predicts it
        if top_k and example.topk_ids:
            _place_topk(topk_ids[row, span], topk_logprobs[row, span], example, top_k)
    out.update(input_ids=input_ids, labels=labels)
    if places is None:
        out["attention_mask"] = attention_mask
    else:
        out["position_ids"] = _packed_positions(examples, places, batch, width)
    if top_k:
        out.update(topk_ids=topk_ids, topk_logprobs=topk_logprobs)
    if uld:
        out.update(_collate_uld(examples, batch, width, top_k, places))
    return out


def pack_rows(lengths: list[int], width: int) -> list[tuple[int, int]]:
    """``(row, start)`` of each sequence, packed first-fit by decreasing length into rows of
    at most ``width`` tokens (at least the longest sequence's length)."""
    places: list[tuple[int, int]] = [(0, 0)] * len(lengths)
    used: list[int] = []  # tokens taken in each row so far
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        row = next((r for r, taken in enumerate(used) if taken + lengths[index] <= width), None)
        if row is None:
            row = len(used)
            used.append(0)
        places[index] = (row, used[row])
        used[row] += lengths[index]
    return places


def _packed_positions(
    examples: list[Example], places: list[tuple[int, int]], rows: int, width: int
) -> torch.Tensor:
    """Positions restarting at 0 at each example; a row's padded tail counts as one more
    sequence of its own (its own 0, 1, ...), so no example attends to padding."""
    positions = torch.zeros((rows, width), dtype=torch.long)
    ends = [0] * rows
    for example, (row, start) in zip(examples, places, strict=True):
        n = len(example.input_ids)
        positions[row, start : start + n] = torch.arange(n)
        ends[row] = max(ends[row], start + n)
    for row, end in enumerate(ends):
        positions[row, end:] = torch.arange(width - end)
    return positions


def _collate_uld(
    examples: list[Example],
    rows: int,
    width: int,
    top_k: int,
    places: list[tuple[int, int]] | None,
) -> dict[str, torch.Tensor]:
    heads = torch.full((rows, width), -1, dtype=torch.long)
    logprobs = torch.full((rows, width, max(top_k, 1)), -math.inf)
    chain = torch.zeros((rows, width))
    for i, example in enumerate(examples):
        if example.uld_head is None:
            continue
        row, begin = (i, 0) if places is None else places[i]
        start = begin + example.prompt_length
        for offset, head in enumerate(example.uld_head):
            # a group starting at the example's first position has no logits of its own to
            # predict it (unpacked, its head would shift to -1): packed, it must not borrow
            # the previous example's last ones
            if head < 0 or example.prompt_length + head == 0:
                continue
            heads[row, start + offset] = start + head
            if head == offset:
                values = example.uld_logprobs[offset][:top_k]
                logprobs[row, start + offset, : len(values)] = torch.tensor(values)
                chain[row, start + offset] = example.uld_chain[offset]
    return {"uld_head": heads, "uld_logprobs": logprobs, "uld_chain": chain}


def _place_topk(ids: torch.Tensor, logprobs: torch.Tensor, example: Example, top_k: int) -> None:
    """Write one example's stored top-k into its rows ``(L, k)`` of the batch, in place."""
    start = example.prompt_length
    positions = example.topk_ids
    sizes = {len(p) for p in positions}
    if len(sizes) == 1 and min(sizes) >= top_k:  # the usual case: one tensor copy
        count = len(positions)
        ids[start : start + count] = torch.tensor(positions)[:, :top_k]
        logprobs[start : start + count] = torch.tensor(example.topk_logprobs)[:, :top_k]
        return
    for offset, (position, values) in enumerate(zip(positions, example.topk_logprobs, strict=True)):
        n = min(len(position), top_k)
        if n:  # an empty position keeps the "no teacher data" filler
            ids[start + offset, :n] = torch.tensor(position[:n])
            logprobs[start + offset, :n] = torch.tensor(values[:n])


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
