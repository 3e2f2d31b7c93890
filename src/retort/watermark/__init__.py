"""Watermarks: a keyed PRF, logits processors that embed it, and exact detectors.

- ``keys``: key files (``new_key``, ``save_key``, ``load_key``, ``check_tokenizer``);
- ``prf``: u(context, token), the keyed uniform every scheme reads (its docstring specifies
  the construction, so a provider can reimplement the detector);
- ``processors``: ``KGWProcessor`` (before the sampler), ``GumbelProcessor`` (the sampler),
  ``watermark_processors`` (the right list for a key);
- ``detect``: ``detect``, ``detect_many`` (several keys), ``detect_pooled`` (many texts);
- ``stats``: the exact binomial and Gamma tails, and the normal approximations;
- ``texts``: the detector's inputs (JSONL of ``text`` records, or a store).

Names are imported on first use, so ``import retort.watermark`` pulls in neither torch nor
scipy. docs/watermark.md describes the schemes and the CLI.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Key": "retort.watermark.keys",
    "new_key": "retort.watermark.keys",
    "save_key": "retort.watermark.keys",
    "load_key": "retort.watermark.keys",
    "check_tokenizer": "retort.watermark.keys",
    "PRF": "retort.watermark.prf",
    "KGWProcessor": "retort.watermark.processors",
    "GumbelProcessor": "retort.watermark.processors",
    "watermark_processors": "retort.watermark.processors",
    "Detection": "retort.watermark.detect",
    "detect": "retort.watermark.detect",
    "detect_many": "retort.watermark.detect",
    "detect_pooled": "retort.watermark.detect",
    "score_pairs": "retort.watermark.detect",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'retort.watermark' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
