"""retort: distill large language models into small ones, and guard models against distillation.

Importing ``retort`` is cheap: the public names below are imported on first use, so that
``import retort`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "RetortError": "retort.errors",
    "load_prompts": "retort.capture.prompts",
    "Store": "retort.capture.store",
    "generate": "retort.capture.runner",
    "load_model": "retort.models.loading",
    "load_tokenizer": "retort.models.loading",
    "prune_layers": "retort.models.pruning",
    "LocalTeacher": "retort.teachers.local",
    "divergence": "retort.losses.divergence",
    "sparse_divergence": "retort.losses.sparse",
    "DistillConfig": "retort.config",
    "GenerateConfig": "retort.config",
    "distill": "retort.train.loop",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'retort' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
