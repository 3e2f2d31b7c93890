"""Reading mode (open weights): teacher-force the suspect on text, score its top-1 predictions.

Sander et al. ("Watermarking Makes Language Models Radioactive", NeurIPS 2024) observe that a
model fine-tuned on KGW- or Gumbel-watermarked text keeps a trace of the key: given a context,
it favours the tokens the watermark favoured there. Reading mode asks the suspect for its argmax
next token at every position of a corpus, given the corpus's real text, and scores each
(context = the last h real ids, predicted token) pair with the key, as the detector scores a
written token. The filters and de-duplication of ``retort.audit.pairs`` keep the p-value exact
when the suspect never saw the watermark, even on a watermarked corpus.

Long texts are read in windows of ``max_length`` ids that overlap by h - 1 ids, so every
position is predicted once, with its whole watermark context inside the window. Windows are
batched by length with right padding and an attention mask; only the positions that are scored
go through the output head (the argmax over the vocabulary), a slice at a time, so no
(tokens x vocabulary) logits tensor is ever held whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from retort.audit.pairs import KGram, PairCollector, frequent_kgrams
from retort.audit.result import AuditResult, verdict
from retort.audit.scoring import check_keys
from retort.errors import ConfigError, InputError
from retort.progress import Progress, Silent
from retort.teachers.chat import leading_bos
from retort.teachers.local import right_pad
from retort.watermark.keys import Key, check_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEFAULT_FREQUENT = 100  # most frequent k-grams of the corpus left out (0: none)
MAX_LENGTH = 512  # ids per window the suspect reads at once
HEAD_ROWS = 1024  # positions through the head at once: (1024, V) float32 is 200 MB at V = 49k


def audit_reading(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str | Sequence[int]],
    keys: Sequence[Key],
    *,
    suspect: str | None = None,
    frequent: int = DEFAULT_FREQUENT,
    exclude: Iterable[KGram] = (),
    max_length: int = MAX_LENGTH,
    batch_size: int = 8,
    null_keys: int = 0,
    null_seed: int | None = None,
    progress: Progress | None = None,
) -> AuditResult:
    """Audit an open-weights suspect: do its next-token predictions favour the keys' tokens?

    Args:
        model: the suspect, a causal LM (``transformers``), in eval mode on its device.
        tokenizer: the suspect's tokenizer, which must be the keys' (the PRF reads ids).
        texts: the corpus read: strings (tokenized here, after the tokenizer's BOS where it
            writes one) or token id lists (read as given).
        keys: one or more keys with the same context width (Bonferroni over them).
        suspect: a name for the report (default: the model's ``name_or_path``).
        frequent: leave out the corpus's ``frequent`` most frequent k-grams (0: none).
        exclude: k-grams (tuples of h + 1 ids) to leave out whatever the text.
        max_length: ids the suspect reads at once (longer texts are read in windows).
        batch_size: windows per forward pass.
        null_keys: repeat the scoring with this many random keys (the null control).
        null_seed: derive the null keys from this seed (reproducible) instead of the OS.
        progress: receives the reading progress.

    Raises:
        ConfigError: keys that disagree, a key for another tokenizer, or a bad setting.
        InputError: an empty corpus.
    """
    history = check_keys(keys)
    for key in keys:
        check_tokenizer(key, tokenizer, flag="the suspect's tokenizer")
    if not texts:
        raise InputError("--texts: the corpus is empty; give texts for the suspect to read")
    if frequent < 0:
        raise ConfigError(f"--frequent {frequent}: a number of k-grams >= 0 (0: none)")
    sequences = [_ids(tokenizer, text) for text in texts]
    collector = PairCollector(
        history, listed=exclude, frequent=frequent_kgrams(sequences, history + 1, frequent)
    )
    predicted = top1_predictions(
        model, sequences, history, max_length=max_length, batch_size=batch_size, progress=progress
    )
    for ids, tokens in zip(sequences, predicted, strict=True):
        collector.add_prediction(ids, tokens)
    name = suspect or getattr(getattr(model, "config", None), "name_or_path", None) or "model"
    settings = {
        "frequent": frequent,
        "excluded_kgrams_listed": len(collector.listed),
        "max_length": max_length,
        "batch_size": batch_size,
        "null_seed": null_seed,
    }
    return verdict(
        "reading",
        str(name),
        collector.result,
        list(keys),
        null_trials=null_keys,
        null_seed=null_seed,
        settings=settings,
    )


def top1_predictions(
    model: Any,
    sequences: Sequence[Sequence[int]],
    history: int,
    *,
    max_length: int = MAX_LENGTH,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> list[list[int]]:
    """The suspect's argmax next token at positions history .. len(x) of each sequence x.

    Returns:
        For each sequence, ``out[j]`` is the top-1 prediction for position ``history + j``
        given ``x[:history + j]`` (the last one follows the whole text); [] for a sequence
        shorter than ``history``.
    """
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    length = min(max_length, limit) if limit else max_length
    if length <= history:
        raise ConfigError(
            f"--max-length {max_length}: the suspect must read more than the key's {history} "
            "context ids at once"
        )
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: at least 1")
    windows = _windows(sequences, history, length)
    windows.sort(key=lambda w: w[2] - w[1], reverse=True)  # similar lengths pad little
    out: list[list[int]] = [[] for _ in sequences]
    parts: dict[tuple[int, int], list[int]] = {}
    progress = progress or Silent()
    progress.start("read", total=len(windows), unit="windows")
    try:
        for first in range(0, len(windows), batch_size):
            batch = windows[first : first + batch_size]
            rows = [list(sequences[i][start:end]) for i, start, end in batch]
            for (i, start, _), tokens in zip(batch, _top1(model, rows, history - 1), strict=True):
                parts[(i, start)] = tokens
            progress.advance(len(batch), tokens=sum(len(r) for r in rows))
    finally:
        progress.finish()
    for i, start, _ in sorted(windows):
        out[i] += parts[(i, start)]
    return out


def _windows(
    sequences: Sequence[Sequence[int]], history: int, length: int
) -> list[tuple[int, int, int]]:
    """(sequence, start, end) windows. Window c starts at c * (length - history + 1), and its
    predictions from index history - 1 on are kept: position p is predicted from the window
    whose last id is p - 1, with its history ids before it in the same window."""
    step = length - history + 1
    windows = []
    for i, ids in enumerate(sequences):
        if len(ids) < history:
            continue
        start = 0
        while True:
            end = min(start + length, len(ids))
            windows.append((i, start, end))
            if end >= len(ids):
                break
            start += step
    return windows


@torch.inference_mode()
def _top1(model: Any, rows: list[list[int]], first: int) -> list[list[int]]:
    """Argmax next token at indices ``first`` .. end of each row (right-padded batch)."""
    device = next(model.parameters()).device
    ids, mask = right_pad(rows, 0, device)  # (B, T); the pad id is never attended to
    wanted = torch.zeros_like(mask, dtype=torch.bool)  # (B, T)
    for row, tokens in enumerate(rows):
        wanted[row, first : len(tokens)] = True
    states, head = _last_states(model, ids, mask)  # (B, T, C) or (B, T, V)
    picked = states[wanted]  # (N, C): scored positions only, row by row
    top = [head(picked[s : s + HEAD_ROWS]).argmax(-1) for s in range(0, len(picked), HEAD_ROWS)]
    flat = torch.cat(top).tolist() if top else []  # (N,)
    counts = wanted.sum(1).tolist()
    out, at = [], 0
    for count in counts:
        out.append(flat[at : at + count])
        at += count
    return out


def _last_states(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """The decoder's final hidden states and the output head, so the head runs on the scored
    positions only; a model without that split gives its logits (and the identity head).
    Logit scaling or soft-capping after the head is monotone, and leaves the argmax alone."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if decoder is not None and decoder is not model and head is not None:
        states = getattr(decoder(input_ids=ids, attention_mask=mask), "last_hidden_state", None)
        if states is not None:
            return states, head
    return model(input_ids=ids, attention_mask=mask).logits, _identity


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _ids(tokenizer: Any, text: str | Sequence[int]) -> list[int]:
    if isinstance(text, str):
        return leading_bos(tokenizer) + tokenizer(text, add_special_tokens=False)["input_ids"]
    return [int(i) for i in text]
