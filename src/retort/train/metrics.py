"""Where per-step metrics go: RUN/metrics.jsonl always; TensorBoard when it is installed; W&B
when it is installed and asked for (``trackers: [wandb]``). Only the main process writes."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

from retort.config import DistillConfig
from retort.errors import ConfigError

log = logging.getLogger(__name__)


class MetricsSink:
    """Appends one JSON line per logged step and forwards the numbers to the trackers."""

    def __init__(self, run_dir: Path, config: DistillConfig, accelerator: Any) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.main = accelerator.is_main_process
        self.writers: list[Any] = []
        if not self.main:
            return
        for name in chosen_trackers(config):
            self.writers.append(_open_tracker(name, run_dir, config))

    def write(self, record: dict[str, Any], split: str = "train") -> None:
        """One line; trackers get the numbers as ``{split}/{name}`` (train/loss, eval/nll)."""
        if not self.main:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        numbers = {k: v for k, v in record.items() if k != "step" and isinstance(v, int | float)}
        for writer in self.writers:
            writer.log(numbers, record["step"], split)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers = []


def chosen_trackers(config: DistillConfig) -> list[str]:
    """``trackers`` as configured; by default TensorBoard if it is installed."""
    if config.trackers is not None:
        for name in config.trackers:
            if not _installed(name):
                extra = "tensorboard" if name == "tensorboard" else "wandb"
                raise ConfigError(
                    f"trackers: {name} is not installed; pip install 'retort[{extra}]' "
                    "or drop it from trackers"
                )
        return list(config.trackers)
    return ["tensorboard"] if _installed("tensorboard") else []


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


class _TensorBoard:
    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))

    def log(self, numbers: dict[str, float], step: int, split: str) -> None:
        for name, value in numbers.items():
            self.writer.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, run_dir: Path, config: DistillConfig) -> None:
        import wandb

        self.run = wandb.init(
            project=config.wandb_project,
            name=run_dir.name,
            dir=str(run_dir),
            config=config.model_dump(mode="json"),
            resume="allow",
            # one W&B run per run folder, resumed with it (the name alone may repeat)
            id="retort-" + hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16],
        )

    def log(self, numbers: dict[str, float], step: int, split: str) -> None:
        self.run.log({f"{split}/{k}": v for k, v in numbers.items()}, step=step)

    def close(self) -> None:
        self.run.finish()


def _open_tracker(name: str, run_dir: Path, config: DistillConfig) -> Any:
    if name == "tensorboard":
        return _TensorBoard(run_dir / "tensorboard")
    return _WandB(run_dir, config)
