"""Terminal output shared by the verbs: a rich progress bar and table helpers."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

out = Console()
if not out.is_terminal:  # piped or captured: rich would assume 80 columns and cut the tables
    out = Console(width=120)
err = Console(stderr=True)


class RichProgress:
    """The ``retort.progress.Progress`` protocol as a rich bar: count, rate, ETA and stats."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._task: Any = None
        self._unit = "items"
        self._tokens = 0
        self._started = 0.0

    def start(self, description: str, total: int, unit: str = "items") -> None:
        self.finish()
        self._unit, self._tokens, self._started = unit, 0, time.perf_counter()
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=err,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, rate="", stats="")

    def advance(self, amount: int = 1, **stats: float) -> None:
        if self._bar is None:
            return
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        self._tokens += int(stats.pop("tokens", 0))
        done = self._bar.tasks[0].completed + amount
        rate = f"{done / elapsed:.2f} {self._unit}/s"
        if self._tokens:
            rate += f" {self._tokens / elapsed:.0f} tok/s"
        shown = " ".join(f"{k} {v:.4g}" for k, v in stats.items())
        self._bar.update(self._task, advance=amount, rate=rate, stats=shown)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def fmt(value: Any, digits: int = 3) -> str:
    """Table cell text: numbers rounded, missing values as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
