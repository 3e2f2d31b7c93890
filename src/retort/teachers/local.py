"""A teacher that runs in this process with transformers: generate, score and full logits."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from retort.models.loading import ModelSource, load_model, load_tokenizer, resolve
from retort.teachers.decoding import clean_config, generate_exactly, row_seeds, sampler_for
from retort.teachers.protocol import Capabilities, Generation, Sampling, Scored
from retort.watermark.processors import watermark_processors

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from retort.watermark.keys import Key


class LocalTeacher:
    """A Hugging Face causal LM used as a teacher, batched with left padding.

    With a ``watermark`` key every completion it writes carries the watermark
    (``retort.watermark.processors``); scoring is unaffected.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        source: ModelSource | None = None,
        watermark: Key | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.source = source
        self.watermark = watermark
        self.capabilities = Capabilities(
            generate=True, score=True, logits=True, max_top_k=model.config.vocab_size
        )

    @classmethod
    def load(cls, spec: str) -> LocalTeacher:
        """Load a teacher from a model spec (alias, folder or hub id)."""
        source = resolve(spec)
        return cls(load_model(source), load_tokenizer(source), source)

    def watermarked(self, key: Key | None) -> LocalTeacher:
        """This teacher (same model, not a copy of it) writing with ``key``'s watermark."""
        twin = copy.copy(self)
        twin.watermark = key
        return twin

    def identity(self) -> dict[str, Any]:
        if self.source is not None:
            return self.source.identity()
        return {"model": self.model.config.name_or_path or type(self.model).__name__}

    @property
    def max_positions(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        sampling: Sampling,
        top_k: int,
        on_token: Callable[[int, int], None] | None = None,
        seeds: list[int] | None = None,
    ) -> list[Generation]:
        """Complete a batch of tokenized prompts, keeping the top-k logprobs of every step.

        Tokens are drawn from the teacher's own softmax(logits / T), cut to ``sampling.top_p``
        only (temperature 0: the argmax), whatever the model's ``generation_config`` says (see
        ``teachers/decoding.py``). Each row samples with its own generator: ``seeds[row]``, or
        by default one derived from ``sampling.seed`` and the row's prompt, so a row's sample
        does not depend on what else is in the batch.

        ``on_token(row, token_id)`` is called as each token is written (for streaming); rows
        that already finished keep receiving padding, which the caller ignores.
        """
        pad_id = self.tokenizer.pad_token_id
        stops = eos_ids(self.model, self.tokenizer)
        input_ids, attention_mask = left_pad(prompts, pad_id)
        if seeds is None:
            seeds = row_seeds(sampling.seed, prompts)
        if self.watermark is None:
            processors = sampler_for(sampling.temperature, sampling.top_p, seeds)
        else:  # the first real id of each left-padded row, so short prompts read no padding
            starts = [input_ids.shape[1] - len(p) for p in prompts]
            processors = watermark_processors(
                self.watermark, sampling.temperature, sampling.top_p, seeds, starts
            )
        out = generate_exactly(
            self.model,
            input_ids.to(self.model.device),
            attention_mask.to(self.model.device),
            clean_config(sampling.max_new_tokens, pad_id, stops, output_logits=True),
            processors,
            streamer=_RowStreamer(on_token) if on_token else None,
        )
        new_tokens = out.sequences[:, input_ids.shape[1] :]  # (B, steps)
        # Raw logits (before any processor) → the teacher's own distribution. With a KGW
        # watermark these logprobs are NOT watermarked (only the written text is): a student
        # distilled on the stored top-k learns the unbiased teacher, one trained on the text
        # (sft) learns the bias. A Gumbel watermark samples exactly from these logprobs.
        chosen, top = [], []
        for step, logits in enumerate(out.logits):
            logprobs = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
            chosen.append(logprobs.gather(1, new_tokens[:, step : step + 1]).squeeze(1))
            if top_k > 0:
                top.append(logprobs.topk(top_k))
        token_logprobs = torch.stack(chosen, dim=1)  # (B, steps)
        if top_k > 0:
            topk_logprobs = torch.stack([t.values for t in top], dim=1)  # (B, steps, k)
            topk_ids = torch.stack([t.indices for t in top], dim=1)  # (B, steps, k)

        results = []
        for row, tokens in enumerate(new_tokens.tolist()):
            length, finish = _completion_length(tokens, stops)
            gen = Generation(completion_ids=tokens[:length], finish_reason=finish)
            gen.token_logprobs = token_logprobs[row, :length].tolist()
            if top_k > 0:
                gen.topk_ids = topk_ids[row, :length].tolist()
                gen.topk_logprobs = topk_logprobs[row, :length].tolist()
            results.append(gen)
        return results

    @torch.no_grad()
    def score(self, sequences: list[list[int]], top_k: int) -> list[Scored]:
        """Teacher-forced logprobs of every token after the first, with ranks and top-k."""
        ids, mask = right_pad(sequences, self.tokenizer.pad_token_id, self.model.device)
        logprobs = torch.log_softmax(
            self.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1
        )  # (B, T-1, V): position t scores token t+1
        targets = ids[:, 1:]
        actual = logprobs.gather(-1, targets[..., None]).squeeze(-1)  # (B, T-1)
        ranks = (logprobs > actual[..., None]).sum(-1) + 1  # (B, T-1)
        top = logprobs.topk(top_k) if top_k > 0 else None
        results = []
        for i, sequence in enumerate(sequences):
            n = len(sequence) - 1
            results.append(
                Scored(
                    token_logprobs=actual[i, :n].tolist(),
                    ranks=ranks[i, :n].tolist(),
                    topk_ids=top.indices[i, :n].tolist() if top is not None else [],
                    topk_logprobs=top.values[i, :n].tolist() if top is not None else [],
                )
            )
        return results

    @torch.no_grad()
    def token_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        """Teacher-forced logprob of every token after the first (``score`` without ranks and
        top-k, so no second (tokens × vocabulary) tensor is built)."""
        ids, mask = right_pad(sequences, self.tokenizer.pad_token_id, self.model.device)
        logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        chosen = logits.gather(-1, ids[:, 1:, None]).squeeze(-1) - logits.logsumexp(-1)
        return [chosen[i, : len(s) - 1].tolist() for i, s in enumerate(sequences)]


class _RowStreamer:
    """transformers' streamer interface, forwarding each row's new token to a callback."""

    def __init__(self, on_token: Callable[[int, int], None]) -> None:
        self.on_token = on_token
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # the first call carries the prompts themselves
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            self.on_token(row, token)

    def end(self) -> None:
        pass


def right_pad(
    rows: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(B, T)`` ids and attention mask on ``device``, for teacher forcing."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``(B, T)`` ids and attention mask, so every row ends where generation starts."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


def eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every token id that ends a completion: the generation config's and the tokenizer's."""
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in ids if i is not None]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _completion_length(tokens: list[int], eos_ids: list[int]) -> tuple[int, str]:
    """Tokens up to and including the first EOS; after it the batch only pads."""
    for position, token in enumerate(tokens):
        if token in eos_ids:
            return position + 1, "stop"
    return len(tokens), "length"
