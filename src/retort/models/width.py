"""Width pruning: fewer MLP channels and attention heads per layer, kept by importance.

The result is the same architecture with a smaller ``intermediate_size`` and
``num_attention_heads`` in its config, so ``from_pretrained`` loads it like any other model.
``head_dim`` is written into the config because ``hidden_size / heads`` no longer gives it.
With grouped-query attention each query head reads the key/value head of its group
(``repeat_kv``: query head ``i`` reads key/value head ``i // (heads / groups)``), so heads go in
one of two ways: the same number of query heads from every group, all key/value heads kept
(``heads`` a multiple of the groups, preferred: keys and values are the cheap part); or whole
groups, their key/value head with them (``heads`` a multiple of the group size; the only way
for plain multi-head attention, where each group is one head).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

from retort.errors import ModelError
from retort.models.importance import WidthScores, attention_head_dim, decoder_layers
from retort.models.pruning import load_copied_weights

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def check_width(model: PreTrainedModel, mlp: int | None, heads: int | None, spec: str) -> None:
    """Refuse widths the model cannot take, naming what it allows."""
    config = model.config
    if (mlp is not None or heads is not None) and not getattr(config, "intermediate_size", None):
        raise ModelError(
            f"--student {spec}: width pruning needs Llama-style blocks (intermediate_size, "
            f"mlp.down_proj, self_attn.o_proj); {type(model).__name__} has none: prune its "
            "depth (prune:N or prune:N:importance)"
        )
    if mlp is not None and not 1 <= mlp <= config.intermediate_size:
        raise ModelError(
            f"--student {spec}: mlp={mlp}; keep between 1 and the teacher's "
            f"{config.intermediate_size} MLP channels"
        )
    if heads is not None:
        total, groups = config.num_attention_heads, _groups(config)
        size = total // groups
        allowed = [
            h
            for h in range(1, total + 1)
            if (h % groups == 0 or h % size == 0) and _config_takes(config, h, model)
        ]
        if heads not in allowed:
            raise ModelError(
                f"--student {spec}: heads={heads} does not fit the teacher's {groups} key/value "
                f"groups of {size} heads; use one of {', '.join(map(str, allowed))}"
            )


def width_selection(
    model: PreTrainedModel, scores: WidthScores, mlp: int | None, heads: int | None
) -> dict[str, list[list[int]] | None]:
    """What to keep in each layer: the ``mlp`` channels and ``heads`` query heads (with their
    key/value heads) of highest score; ``None`` where that width is kept whole."""
    groups = _groups(model.config)
    chosen = [_kept_heads(score, heads, groups) for score in scores.heads]
    return {
        "mlp": None if mlp is None else [_top(score, mlp).tolist() for score in scores.mlp],
        "heads": None if heads is None else [query for query, _ in chosen],
        "kv_heads": None if heads is None else [key_value for _, key_value in chosen],
    }


def prune_width(model: PreTrainedModel, kept: dict[str, list[list[int]] | None]) -> PreTrainedModel:
    """A new model with, in each layer, only the channels and heads ``kept`` lists (from
    ``width_selection``, or a run folder's record of it)."""
    config = copy.deepcopy(model.config)
    head_dim = attention_head_dim(model)
    total = config.num_hidden_layers
    every_channel = list(range(config.intermediate_size))
    channels_of = kept.get("mlp") or [every_channel] * total
    heads_of = kept.get("heads") or [list(range(config.num_attention_heads))] * total
    key_values_of = kept.get("kv_heads") or [list(range(_groups(config)))] * total
    if not len(channels_of) == len(heads_of) == len(key_values_of) == total:
        raise ModelError(f"{type(model).__name__}: the width kept lists another layer count")
    config.intermediate_size = len(channels_of[0])
    config.num_attention_heads = len(heads_of[0])
    config.num_key_value_heads = len(key_values_of[0])
    config.head_dim = head_dim
    student = type(model)(config).to(model.dtype)

    layers = decoder_layers(model)
    prefix = _layers_prefix(model, layers)
    state = {}
    for key, value in model.state_dict().items():
        index, name = _split(key, prefix)
        if index is None:
            state[key] = value.clone()
            continue
        channels = torch.tensor(channels_of[index])
        query = _head_columns(heads_of[index], head_dim)
        key_value = _head_columns(key_values_of[index], head_dim)
        if name in _CHANNEL_ROWS:
            value = value[channels]
        elif name == "mlp.down_proj.weight":
            value = value[:, channels]
        elif name in ("self_attn.q_proj.weight", "self_attn.q_proj.bias"):
            value = value[query]
        elif name in _KEY_VALUE:
            value = value[key_value]
        elif name == "self_attn.o_proj.weight":
            value = value[:, query]
        state[key] = value.clone()
    return load_copied_weights(student, state, f"{type(model).__name__} channels and heads")


_CHANNEL_ROWS = (
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.gate_proj.bias",
    "mlp.up_proj.bias",
)
_KEY_VALUE = (
    "self_attn.k_proj.weight",
    "self_attn.k_proj.bias",
    "self_attn.v_proj.weight",
    "self_attn.v_proj.bias",
)


def _top(score: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` highest scores, in their original order."""
    return torch.topk(score, keep).indices.sort().values


def _kept_heads(score: torch.Tensor, heads: int | None, groups: int) -> tuple[list[int], list[int]]:
    """``(query heads, key/value heads)`` kept, in order (see the module docstring)."""
    total = score.numel()
    size = total // groups
    if heads is None or heads == total:
        return list(range(total)), list(range(groups))
    by_group = score.view(groups, size)
    if heads % groups == 0:  # the best heads / groups of every group
        kept = [(_top(by_group[g], heads // groups) + g * size).tolist() for g in range(groups)]
        return [h for group in kept for h in group], list(range(groups))
    chosen = _top(by_group.sum(1), heads // size).tolist()  # whole groups, by their heads' sum
    return [g * size + h for g in chosen for h in range(size)], chosen


def _config_takes(config, heads: int, model: PreTrainedModel) -> bool:
    """Whether the model's config class accepts ``heads`` (Llama's and Gemma 3's want them to
    divide ``hidden_size``, though ``head_dim`` is given): checked by saving one, which
    validates as ``save_pretrained`` at the end of a run would."""
    import tempfile

    changed = copy.deepcopy(config)
    changed.head_dim = attention_head_dim(model)
    changed.num_attention_heads = heads
    try:
        with tempfile.TemporaryDirectory() as folder:
            changed.save_pretrained(folder)
    except Exception:  # huggingface_hub's StrictDataclass errors are not ValueErrors
        return False
    return True


def _groups(config) -> int:
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads


def _head_columns(heads: list[int], head_dim: int) -> torch.Tensor:
    return torch.tensor([h * head_dim + d for h in heads for d in range(head_dim)])


def _layers_prefix(model: PreTrainedModel, layers: torch.nn.ModuleList) -> str:
    for name, module in model.named_modules():
        if module is layers:
            return name + "."
    raise ModelError(f"{type(model).__name__}: decoder layers not found by name")


def _split(key: str, prefix: str) -> tuple[int | None, str]:
    """``model.layers.3.mlp.up_proj.weight`` → ``(3, "mlp.up_proj.weight")``."""
    if not key.startswith(prefix):
        return None, key
    index, _, name = key[len(prefix) :].partition(".")
    return int(index), name
