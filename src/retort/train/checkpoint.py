"""Checkpoints that resume a run exactly: weights, optimizer, scheduler, RNG, step.

``RUN/checkpoints/step-000050/`` holds ``state.pt`` and ``trainer_state.json``; a checkpoint is
written in a hidden folder and renamed, so a folder that exists is whole. Only the newest
``keep`` checkpoints stay on disk. A sharded run (``--fsdp student``) keeps its weights and
optimizer state in ``sharded/`` beside them, one file per process (``sharding.save_state``).

The random generators are saved per process (``rng``: one entry per rank, in rank order), CUDA's
included: under DDP each process's dropout has drawn its own stream, so each resumes its own.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retort.errors import ConfigError
from retort.train import sharding

log = logging.getLogger(__name__)
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
    rng_states: list[dict[str, Any]] | None = None,
    sharded: bool = False,
) -> Path:
    """Write the checkpoint of ``step`` and prune older ones beyond ``keep``.

    ``rng_states`` holds every process's ``rng_state()`` in rank order (gathered by the
    caller); without it, this process's own is saved as the only one. ``sharded``: every
    process has already written the weights and optimizer state into ``fresh_partial``'s
    folder (``sharding.save_state``); the rest is written here.
    """
    partial = partial_folder(run_dir, step)
    if not sharded:
        fresh_partial(run_dir, step)
    state: dict[str, Any] = {
        "scheduler": scheduler.state_dict(),
        "extra": extra or {},  # e.g. a hidden-state projector, the KD rescaler
        "rng": rng_states if rng_states is not None else [rng_state()],
    }
    if not sharded:
        state["model"] = trained_state(model)
        state["optimizer"] = optimizer.state_dict()
    torch.save(state, partial / STATE_FILE)
    (partial / INFO_FILE).write_text(json.dumps({"step": step, **info}, indent=2) + "\n")
    final = run_dir / "checkpoints" / f"step-{step:06d}"
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def partial_folder(run_dir: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` is written before it is renamed into place."""
    return run_dir / "checkpoints" / f".step-{step:06d}.partial"


def fresh_partial(run_dir: Path, step: int) -> Path:
    """An empty ``partial_folder`` (a crashed earlier attempt's is discarded)."""
    partial = partial_folder(run_dir, step)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


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
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rank: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore everything saved at ``path``, the random generators of process ``rank``;
    returns its trainer info (``step`` among it) and the ``extra`` states for the caller to
    restore."""
    state = torch.load(path / STATE_FILE, weights_only=False)
    if (path / sharding.SHARDED_STATE).is_dir():
        sharding.load_state(model, optimizer, path / sharding.SHARDED_STATE)  # collective
    else:
        _load_whole(path, state, model, optimizer)
    scheduler.load_state_dict(state["scheduler"])
    restore_rng(_rank_rng(state["rng"], rank, path))
    return json.loads((path / INFO_FILE).read_text()), state.get("extra", {})


def _load_whole(
    path: Path, state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    if "model" not in state:
        raise ConfigError(
            f"{path}: holds no weights (a sharded checkpoint copied without its "
            f"{sharding.SHARDED_STATE}/ folder?); copy the whole checkpoint folder"
        )
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    absent = sorted(set(missing) - _frozen_names(model))  # frozen weights are not saved
    if unexpected or absent:
        detail = f"unexpected {unexpected[:3]}" if unexpected else f"missing {absent[:3]}"
        raise ConfigError(
            f"{path}: this checkpoint was written for another student ({detail}); resume "
            "with the run's own settings (config.yaml beside it)"
        )
    optimizer.load_state_dict(state["optimizer"])


def rng_state() -> dict[str, Any]:
    """This process's random generators: torch's CPU one, every CUDA device's, Python's and
    NumPy's."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # Only once CUDA is in use: a process that never touched it has drawn nothing there,
        # and reading the states would initialise CUDA in a CPU-only run.
        state["cuda"] = torch.cuda.get_rng_state_all()  # one ByteTensor per device
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set this process's generators to ``state`` (from ``rng_state``)."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if len(cuda) != count:
            log.warning(
                "checkpoint has CUDA RNG states for %d devices, this process sees %d; "
                "restoring the first %d",
                len(cuda),
                count,
                min(len(cuda), count),
            )
        torch.cuda.set_rng_state_all(cuda[:count])


def _rank_rng(saved: Any, rank: int, path: Path) -> dict[str, Any]:
    """Process ``rank``'s saved generators. Checkpoints written before per-process states hold
    one mapping; a run resumed on more processes than wrote it starts the extra ones from the
    first process's state (as one process's checkpoint always did)."""
    states = [saved] if isinstance(saved, dict) else list(saved)
    if rank >= len(states):
        log.warning(
            "%s: random state saved for %d process(es); process %d resumes from process 0's",
            path,
            len(states),
            rank,
        )
        return states[0]
    return states[rank]
