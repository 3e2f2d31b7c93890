"""Layer-pruned students: keep N evenly spaced decoder layers of the teacher.

This is the DistilBERT / Minitron initialisation: the student starts as a thinner copy of the
teacher (same embeddings, norms and head, a subset of its blocks), so distillation repairs a
damaged model instead of training one from scratch.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING

from retort.errors import ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

PREFIX = "prune:"
# Decoder blocks live at `model.layers.<i>.` (Llama, Qwen, Mistral, Gemma) or `transformer.h.<i>.`
# (GPT-2 family); the state-dict key tells both apart without knowing the class.
_LAYER_KEY = re.compile(r"^(?P<head>.*?\b(?:layers|h))\.(?P<index>\d+)\.(?P<tail>.+)$")


def parse_prune_spec(spec: str) -> int | None:
    """``prune:N`` → N; anything else → None. A malformed N is an error."""
    if not spec.startswith(PREFIX):
        return None
    raw = spec[len(PREFIX) :]
    if not raw.isdigit():
        raise ModelError(f"--student {spec}: N must be a whole number, e.g. prune:10")
    return int(raw)


def kept_layers(total: int, keep: int) -> list[int]:
    """``keep`` evenly spaced indices in ``range(total)``, first and last included."""
    if not 1 <= keep < total:
        raise ModelError(
            f"--student prune:{keep}: keep between 1 and {total - 1} "
            f"of the teacher's {total} layers"
        )
    if keep == 1:
        return [0]
    return [round(i * (total - 1) / (keep - 1)) for i in range(keep)]


def prune_layers(teacher: PreTrainedModel, keep: int) -> PreTrainedModel:
    """A new model with ``keep`` of the teacher's decoder layers and all its other weights."""
    total = teacher.config.num_hidden_layers
    indices = kept_layers(total, keep)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = keep
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
            f"prune:{keep}: cannot map {type(teacher).__name__} layers "
            f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]})"
        )
    if tied:
        student.tie_weights()
    return student
