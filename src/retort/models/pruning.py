"""Pruned students: a thinner copy of the teacher that distillation then repairs.

This is the DistilBERT / Minitron initialisation: the student starts with the teacher's
embeddings, norms and head and a subset of its blocks, channels and heads, so distillation
repairs a damaged model instead of training one from scratch. What to keep is either evenly
spaced layers (``prune:N``) or measured on calibration prompts from the store
(``models/importance.py``): Block Influence for depth, activation norms for width.

Spec grammar: ``prune:`` then ``:``-separated parts, in any order —
``N`` (decoder layers kept), ``even`` | ``importance`` (how layers are chosen; default even),
``mlp=M`` (MLP channels kept per layer), ``heads=H`` (query heads kept per layer).
E.g. ``prune:10``, ``prune:10:importance``, ``prune:20:importance:mlp=512``, ``prune:heads=6``.
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from retort.errors import ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)
PREFIX = "prune:"
METHODS = ("even", "importance")
# Decoder blocks live at `model.layers.<i>.` (Llama, Qwen, Mistral, Gemma) or `transformer.h.<i>.`
# (GPT-2 family); the state-dict key tells both apart without knowing the class.
_LAYER_KEY = re.compile(r"^(?P<head>.*?\b(?:layers|h))\.(?P<index>\d+)\.(?P<tail>.+)$")
_GRAMMAR = "N, even, importance, mlp=M, heads=H (e.g. prune:10:importance)"


@dataclass(frozen=True)
class PruneSpec:
    """What a ``prune:`` student keeps of its teacher."""

    text: str
    layers: int | None = None  # decoder layers kept (None: all)
    by: str = "even"  # how the kept layers are chosen
    mlp: int | None = None  # MLP channels kept per layer (None: all)
    heads: int | None = None  # query heads kept per layer (None: all)

    @property
    def needs_calibration(self) -> bool:
        return (self.layers is not None and self.by == "importance") or self.width

    @property
    def width(self) -> bool:
        return self.mlp is not None or self.heads is not None


def parse_prune_spec(spec: str) -> PruneSpec | None:
    """``prune:...`` → its ``PruneSpec``; anything else → None. A malformed part is an error."""
    if not spec.startswith(PREFIX):
        return None
    fields: dict[str, object] = {}
    for part in spec[len(PREFIX) :].split(":"):
        key, sep, value = part.partition("=")
        if part.isdigit():
            fields["layers"] = int(part)
        elif part in METHODS:
            fields["by"] = part
        elif sep and key in ("mlp", "heads") and value.isdigit() and int(value) > 0:
            fields[key] = int(value)
        else:
            raise ModelError(f"--student {spec}: '{part}' is not a pruning part; use {_GRAMMAR}")
    if "by" in fields and "layers" not in fields:
        raise ModelError(
            f"--student {spec}: {fields['by']} chooses layers; give how many, e.g. prune:10:"
            f"{fields['by']}"
        )
    if not fields.keys() - {"by"}:
        raise ModelError(f"--student {spec}: say what to keep; use {_GRAMMAR}")
    return PruneSpec(spec, **fields)


def prune(
    teacher: PreTrainedModel, spec: PruneSpec, calibration: list[list[int]] | None = None
) -> PreTrainedModel:
    """The student ``spec`` describes, cut from ``teacher`` (left unchanged). Depth goes first;
    width importance is then measured on the shallower model, whose activations it keeps.

    Args:
        calibration: token sequences to measure importance on (see
            ``importance.calibration_sequences``); needed by ``importance`` and width pruning.
    """
    from retort.models.importance import block_influence, width_importance
    from retort.models.width import check_width, prune_width

    if spec.needs_calibration and not calibration:
        raise ModelError(
            f"--student {spec.text}: importance is measured on calibration prompts from a store; "
            "use it with retort distill --data STORE (or prune by even spacing: prune:N)"
        )
    check_width(teacher, spec.mlp, spec.heads, spec.text)
    student, record = teacher, {"spec": spec.text}
    if spec.layers is not None:
        total = teacher.config.num_hidden_layers
        if spec.by == "importance":
            influence = block_influence(teacher, calibration)
            indices = most_influential(influence, spec.layers, spec.text)
            log.info(
                "%s: kept layers %s (Block Influence %s)",
                spec.text,
                indices,
                " ".join(f"{v:.3f}" for v in influence),
            )
        else:
            indices = kept_layers(total, spec.layers)
        student, record["layers"] = prune_layers(teacher, indices), indices
    if spec.width:  # parse_prune_spec saw to it that depth or width (or both) is asked for
        scores = width_importance(student, calibration)
        student = prune_width(student, scores, spec.mlp, spec.heads)
    # kept in config.json of every checkpoint and final/: what this student was cut from
    student.config.retort_pruned = record | {"parameters": student.num_parameters()}
    return student


def most_influential(influence: list[float], keep: int, spec: str) -> list[int]:
    """Indices of the ``keep`` layers with the highest Block Influence, in model order."""
    _check_keep(len(influence), keep, spec)
    ranked = sorted(range(len(influence)), key=lambda i: influence[i], reverse=True)
    return sorted(ranked[:keep])


def _check_keep(total: int, keep: int, spec: str) -> None:
    if not 1 <= keep < total:
        raise ModelError(
            f"--student {spec}: keep between 1 and {total - 1} of the teacher's {total} layers"
        )


def kept_layers(total: int, keep: int) -> list[int]:
    """``keep`` evenly spaced indices in ``range(total)``, first and last included."""
    _check_keep(total, keep, f"prune:{keep}")
    if keep == 1:
        return [0]
    return [round(i * (total - 1) / (keep - 1)) for i in range(keep)]


def prune_layers(teacher: PreTrainedModel, keep: int | list[int]) -> PreTrainedModel:
    """A new model with some of the teacher's decoder layers (``keep`` evenly spaced ones, or
    the listed indices) and all its other weights."""
    total = teacher.config.num_hidden_layers
    indices = kept_layers(total, keep) if isinstance(keep, int) else list(keep)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(indices)
    if getattr(config, "layer_types", None):  # per-layer attention kinds (sliding/full)
        config.layer_types = [config.layer_types[i] for i in indices]
    student = type(teacher)(config).to(teacher.dtype)

    new_index = {old: new for new, old in enumerate(indices)}
    state = {}
    for key, value in teacher.state_dict().items():
        match = _LAYER_KEY.match(key)
        if match is None:
            state[key] = value.clone()
        elif int(match["index"]) in new_index:
            state[f"{match['head']}.{new_index[int(match['index'])]}.{match['tail']}"] = (
                value.clone()
            )
    missing, unexpected = student.load_state_dict(state, strict=False)
    # Tied heads appear as "missing" in some versions; anything else means we mis-mapped.
    tied = {k for k in missing if k.endswith("lm_head.weight")}
    if set(missing) - tied or unexpected:
        raise ModelError(
            f"prune:{len(indices)}: cannot map {type(teacher).__name__} layers "
            f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]})"
        )
    if tied:
        student.tie_weights()
    return student
