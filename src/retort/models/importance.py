"""What each part of a model does on real text: the scores that importance pruning keeps by.

- **Block Influence** (ShortGPT, Men et al. 2024): ``1 - cos(input, output)`` of each decoder
  block, averaged over the calibration tokens. A block whose output points where its input did
  barely changes the residual stream, so removing it costs least.
- **Activation importance** (Minitron, Muralidharan et al. 2024): the L2 norm, over calibration
  tokens, of each MLP channel (the input of ``down_proj``) and of each attention head's output
  (the input of ``o_proj``, one ``head_dim`` slice per head). Channels and heads that stay small
  contribute least to what the block writes.

Scores come from forward hooks on the model as it is, so they work for any model whose blocks
follow the Llama layout (Llama, Qwen, Mistral, Gemma, SmolLM). Padding never counts: each batch's
attention mask weighs every token.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from retort.errors import ModelError, StoreError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

BATCH_SIZE = 8


def calibration_sequences(
    rows: Sequence[dict[str, Any]], count: int, max_seq_len: int, source: Any
) -> list[list[int]]:
    """``count`` rows spread evenly over the store (its first rows are often one topic), each as
    its prompt and completion ids cut to ``max_seq_len``.

    Raises:
        StoreError: no row has any tokens, or ``count`` is below 1.
    """
    if count < 1:
        raise StoreError(f"prune_calibration {count}: give at least 1 calibration row")
    usable = [r for r in rows if r["prompt_token_ids"] or r["completion_token_ids"]]
    if not usable:
        raise StoreError(
            f"{source}: no row with tokens to measure importance on; capture some with "
            "retort generate, or prune by even spacing (prune:N)"
        )
    return [
        (list(r["prompt_token_ids"]) + list(r["completion_token_ids"]))[:max_seq_len]
        for r in spread(usable, count)
    ]


def spread(rows: Sequence[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """``count`` of ``rows`` (all, if fewer), evenly spaced from the first."""
    count = min(count, len(rows))
    step = len(rows) / count if count else 1
    return [rows[int(i * step)] for i in range(count)]


def decoder_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The model's list of decoder blocks (``model.layers`` or ``transformer.h``)."""
    total = model.config.num_hidden_layers
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if (
            isinstance(module, torch.nn.ModuleList)
            and leaf in ("layers", "h")
            and len(module) == total
        ):
            return module
    raise ModelError(f"{type(model).__name__}: no list of {total} decoder layers found to prune")


def block_influence(model: PreTrainedModel, sequences: list[list[int]]) -> list[float]:
    """Per decoder layer, the mean over calibration tokens of ``1 - cos(input, output)``."""
    layers = decoder_layers(model)
    totals = torch.zeros(len(layers), dtype=torch.float64)
    weight = torch.zeros((), dtype=torch.float64)

    def hook(index: int):
        def record(_module, args, kwargs, output) -> None:
            before = args[0] if args else kwargs["hidden_states"]
            after = output[0] if isinstance(output, tuple) else output
            cosine = torch.nn.functional.cosine_similarity(before.float(), after.float(), dim=-1)
            totals[index] += ((1 - cosine) * _mask.current).sum().double()

        return record

    handles = [
        layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)
    ]
    try:
        for mask in _forwards(model, sequences):
            weight += mask.sum().double()
    finally:
        for handle in handles:
            handle.remove()
    return (totals / weight).tolist()


@dataclass
class WidthScores:
    """Activation importance per layer: ``mlp[layer][channel]``, ``heads[layer][head]``."""

    mlp: list[torch.Tensor]
    heads: list[torch.Tensor]


def width_importance(model: PreTrainedModel, sequences: list[list[int]]) -> WidthScores:
    """L2 norms over calibration tokens of each MLP channel and each attention head's output."""
    layers = decoder_layers(model)
    head_dim = attention_head_dim(model)
    mlp: list[torch.Tensor | None] = [None] * len(layers)
    heads: list[torch.Tensor | None] = [None] * len(layers)

    def squares(store: list[torch.Tensor | None], index: int, group: int):
        def record(_module, args) -> None:
            x = args[0].float()
            if group > 1:  # one value per head: the squares of its head_dim outputs summed
                x = x.unflatten(-1, (-1, group))
                sums = (x.pow(2).sum(-1) * _mask.current.unsqueeze(-1)).sum((0, 1))
            else:
                sums = (x.pow(2) * _mask.current.unsqueeze(-1)).sum((0, 1))
            sums = sums.double()
            store[index] = sums if store[index] is None else store[index] + sums

        return record

    handles = []
    for i, layer in enumerate(layers):
        down, out = _mlp_down(layer, model), _attention_out(layer, model)
        handles.append(down.register_forward_pre_hook(squares(mlp, i, 1)))
        handles.append(out.register_forward_pre_hook(squares(heads, i, head_dim)))
    try:
        for _ in _forwards(model, sequences):
            pass
    finally:
        for handle in handles:
            handle.remove()
    return WidthScores([m.sqrt() for m in mlp], [h.sqrt() for h in heads])


def attention_head_dim(model: PreTrainedModel) -> int:
    config = model.config
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _mlp_down(layer: torch.nn.Module, model: PreTrainedModel) -> torch.nn.Module:
    return _child(layer, "mlp.down_proj", model)


def _attention_out(layer: torch.nn.Module, model: PreTrainedModel) -> torch.nn.Module:
    return _child(layer, "self_attn.o_proj", model)


def _child(layer: torch.nn.Module, path: str, model: PreTrainedModel) -> torch.nn.Module:
    try:
        return layer.get_submodule(path)
    except AttributeError:
        raise ModelError(
            f"{type(model).__name__}: width pruning needs Llama-style blocks ({path} in each "
            "layer); prune its depth instead (prune:N or prune:N:importance)"
        ) from None


class _Mask:
    """The attention mask of the batch in flight, for the hooks (float, batch × tokens)."""

    current: torch.Tensor


_mask = _Mask()


@contextmanager
def _evaluating(model: PreTrainedModel) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _forwards(model: PreTrainedModel, sequences: list[list[int]]) -> Iterator[torch.Tensor]:
    """Run the model over ``sequences`` in right-padded batches; yield each batch's mask."""
    device = next(model.parameters()).device
    with _evaluating(model):
        for start in range(0, len(sequences), BATCH_SIZE):
            batch = sequences[start : start + BATCH_SIZE]
            width = max(len(s) for s in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for row, sequence in enumerate(batch):
                ids[row, : len(sequence)] = torch.tensor(sequence)
                mask[row, : len(sequence)] = 1
            _mask.current = mask.to(device, torch.float32)
            model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
            yield _mask.current
