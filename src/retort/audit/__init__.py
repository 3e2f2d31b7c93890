"""The provenance audit: does a suspect model carry our watermark ("radioactivity")?

- ``reading``: ``audit_reading`` teacher-forces an open-weights suspect on text and scores its
  top-1 predictions (Sander et al., NeurIPS 2024, "reading mode");
- ``sampling``: ``audit_api`` (a served suspect) and ``audit_sampled`` (a local one) sample it
  on prompts and test the pooled completions;
- ``pairs``: the (context, token) pairs scored, the filters (the input's own k-grams, listed
  and frequent k-grams) and de-duplication;
- ``scoring``: exact p-values per key, Bonferroni over keys, the null-key control (random keys
  and a KS test of their p-values);
- ``result``: ``AuditResult``, its plain-words ``statement`` and ``write_report`` (JSON);
- ``run``: ``AuditSettings`` and ``run_audit``, what ``retort audit`` calls.

Names are imported on first use, so ``import retort.audit`` pulls in neither torch nor scipy.
docs/audit.md describes the modes, the numbers and their limits.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "audit_reading": "retort.audit.reading",
    "top1_predictions": "retort.audit.reading",
    "audit_api": "retort.audit.sampling",
    "audit_sampled": "retort.audit.sampling",
    "AuditResult": "retort.audit.result",
    "write_report": "retort.audit.result",
    "KeyScore": "retort.audit.scoring",
    "NullControl": "retort.audit.scoring",
    "null_keys": "retort.audit.scoring",
    "AuditSettings": "retort.audit.run",
    "run_audit": "retort.audit.run",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'retort.audit' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
