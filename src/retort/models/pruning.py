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
from typing import TYPE_CHECKING, Any

from retort.errors import ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)
PREFIX = "prune:"
PRUNED_FILE = "pruned.json"  # in a run folder: what its prune: student kept of the teacher
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
        name = "layers" if part.isdigit() else "by" if part in METHODS else key
        if name in fields:
            raise ModelError(f"--student {spec}: '{part}' says again what another part said")
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
    """The student ``spec`` describes, cut from ``teacher`` (left unchanged); see ``pruned``."""
    return pruned(teacher, spec, calibration)[0]


def pruned(
    teacher: PreTrainedModel,
    spec: PruneSpec,
    calibration: list[list[int]] | None = None,
    kept: dict[str, Any] | None = None,
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """The student ``spec`` describes and what it kept of the teacher (``{"spec", "layers",
    "mlp", "heads", "kv_heads"}``, JSON). Depth goes first; width importance is then measured
    on the shallower model, whose activations it keeps.

    Args:
        calibration: token sequences to measure importance on (see
            ``importance.calibration_sequences``); needed by ``importance`` and width pruning.
        kept: what an earlier call kept (a run folder's ``pruned.json``): the same student is
            rebuilt without measuring again, so a resumed or merged run never depends on
            importance coming out the same twice.
    """
    from retort.models.importance import width_importance
    from retort.models.width import check_width, prune_width, width_selection

    check_width(teacher, spec.mlp, spec.heads, spec.text)
    if kept is not None:
        _check_kept(kept, spec)
    elif spec.needs_calibration and not calibration:
        raise ModelError(
            f"--student {spec.text}: importance is measured on calibration prompts from a store; "
            "use it with retort distill --data STORE (or prune by even spacing: prune:N)"
        )
    kept = dict(kept or {"spec": spec.text})
    student = teacher
    if spec.layers is not None:
        if "layers" not in kept:
            kept["layers"] = _choose_layers(teacher, spec, calibration)
        student = prune_layers(teacher, kept["layers"])
    if spec.width:  # parse_prune_spec saw to it that depth or width (or both) is asked for
        if "mlp" not in kept:
            scores = width_importance(student, calibration)
            kept |= width_selection(student, scores, spec.mlp, spec.heads)
        student = prune_width(student, kept)
    # in config.json of final/: what this student was cut from
    student.config.retort_pruned = {
        "spec": spec.text,
        "layers": kept.get("layers"),
        "parameters": student.num_parameters(),
    }
    return student, kept


def _choose_layers(
    teacher: PreTrainedModel, spec: PruneSpec, calibration: list[list[int]] | None
) -> list[int]:
    from retort.models.importance import block_influence

    if spec.by != "importance":
        return kept_layers(teacher.config.num_hidden_layers, spec.layers, spec.text)
    influence = block_influence(teacher, calibration)
    chosen = most_influential(influence, spec.layers, spec.text)
    log.info(
        "%s: kept layers %s (Block Influence %s)",
        spec.text,
        chosen,
        " ".join(f"{v:.3f}" for v in influence),
    )
    return chosen


def _check_kept(kept: dict[str, Any], spec: PruneSpec) -> None:
    layers, mlp, heads = kept.get("layers"), kept.get("mlp"), kept.get("heads")
    fits = (
        kept.get("spec") == spec.text
        and (spec.layers is None) == (layers is None)
        and (layers is None or len(layers) == spec.layers)
        and (spec.mlp is None or (mlp and len(mlp[0]) == spec.mlp))
        and (spec.heads is None or (heads and len(heads[0]) == spec.heads))
    )
    if not fits:
        raise ModelError(
            f"{PRUNED_FILE} ({kept.get('spec')}): not what --student {spec.text} keeps; "
            "give the run's own student spec"
        )


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


def kept_layers(total: int, keep: int, spec: str | None = None) -> list[int]:
    """``keep`` evenly spaced indices in ``range(total)``, first and last included."""
    _check_keep(total, keep, spec or f"prune:{keep}")
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
    # per-layer settings (layer_types: sliding or full attention; SmolLM3's no_rope_layers)
    for name, value in config.to_dict().items():
        if isinstance(value, list) and len(value) == total and name != "architectures":
            setattr(config, name, [value[i] for i in indices])
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
    return load_copied_weights(student, state, f"{type(teacher).__name__} layers")


def load_copied_weights(
    student: PreTrainedModel, state: dict[str, Any], what: str
) -> PreTrainedModel:
    """``student`` with ``state`` (the teacher's weights, cut to its shapes) loaded; ``what``
    names what was cut, for the error when the keys or shapes do not fit."""
    try:
        missing, unexpected = student.load_state_dict(state, strict=False)
    except RuntimeError as error:  # fused projections (qkv_proj, gate_up_proj) keep old sizes
        first = str(error).splitlines()[-1].strip()
        raise ModelError(
            f"cannot map {what} ({first}); prune its depth instead (prune:N or prune:N:importance)"
        ) from None
    # Tied heads appear as "missing" in some versions; anything else means we mis-mapped.
    tied = {k for k in missing if k.endswith("lm_head.weight")}
    if set(missing) - tied or unexpected:
        raise ModelError(
            f"cannot map {what} (missing {sorted(set(missing) - tied)[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    if tied:
        student.tie_weights()
    return student
