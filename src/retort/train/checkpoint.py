"""Checkpoints that resume a run exactly: weights, optimizer, scheduler, RNG, step.

``RUN/checkpoints/step-000050/`` holds ``state.pt`` and ``trainer_state.json``; a checkpoint is
written in a hidden folder and renamed, so a folder that exists is whole. Only the newest
``keep`` checkpoints stay on disk.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retort.errors import ConfigError

STATE_FILE = "state.pt"
INFO_FILE = "trainer_state.json"


def save(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    info: dict[str, Any],
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write the checkpoint of ``step`` and prune older ones beyond ``keep``."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    partial = root / f".step-{step:06d}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    state = {
        "model": trained_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "extra": extra or {},  # e.g. a hidden-state projector, the KD rescaler
        "rng": {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": np.random.get_state(),
        },
    }
    torch.save(state, partial / STATE_FILE)
    (partial / INFO_FILE).write_text(json.dumps({"step": step, **info}, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def trained_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights that change in training: all of them, or with LoRA the adapters alone
    (the frozen base comes back from the student spec, so checkpoints stay small)."""
    frozen = _frozen_names(model)
    return {name: value for name, value in model.state_dict().items() if name not in frozen}


def _frozen_names(model: torch.nn.Module) -> set[str]:
    """Frozen parameters under every name, tied ones too (a tied head is the embedding)."""
    named = model.named_parameters(remove_duplicate=False)
    return {name for name, p in named if not p.requires_grad}


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / INFO_FILE).is_file())


def load(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore everything saved at ``path``; returns its trainer info (``step`` among it) and
    the ``extra`` states for the caller to restore."""
    state = torch.load(path / STATE_FILE, weights_only=False)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    absent = sorted(set(missing) - _frozen_names(model))  # frozen weights are not saved
    if unexpected or absent:
        detail = f"unexpected {unexpected[:3]}" if unexpected else f"missing {absent[:3]}"
        raise ConfigError(
            f"{path}: this checkpoint was written for another student ({detail}); resume "
            "with the run's own settings (config.yaml beside it)"
        )
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    return json.loads((path / INFO_FILE).read_text()), state.get("extra", {})
