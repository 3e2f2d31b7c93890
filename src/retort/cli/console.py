"""Terminal output shared by the verbs: a rich progress bar and table helpers."""

from __future__ import annotations

import os
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
# Seconds between progress lines when stderr is a log file or a pipe (no bar to redraw).
LINE_SECONDS = float(os.environ.get("RETORT_PROGRESS_SECONDS", "30"))


class RichProgress:
    """The ``retort.progress.Progress`` protocol as a rich bar: count, rate, ETA and stats.

    When stderr is not a terminal (a log file, CI, nohup) rich draws nothing until the end, so
    the same numbers go out instead as a plain line every ``LINE_SECONDS`` and at the end."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or err
        self._bar: Progress | None = None
        self._task: Any = None
        self._unit = "items"
        self._tokens = 0
        self._started = 0.0
        self._lines: LineProgress | None = None

    def start(self, description: str, total: int, unit: str = "items") -> None:
        self.finish()
        self._unit, self._tokens, self._started = unit, 0, time.perf_counter()
        if not self._console.is_terminal:
            self._lines = LineProgress(self._console, description, total, unit)
            return
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self._console,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, rate="", stats="")

    def advance(self, amount: int = 1, **stats: float) -> None:
        if self._lines is not None:
            self._lines.advance(amount, **stats)
            return
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
        if self._lines is not None:
            self._lines.finish()
            self._lines = None
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class LineProgress:
    """One stage's progress as periodic plain lines:
    ``generate 96/412 prompts · 1.9 prompts/s · 212 tok/s · 50s · eta 2m46s · loss 2.1``."""

    def __init__(self, console: Console, description: str, total: int, unit: str) -> None:
        self.console, self.description, self.total, self.unit = console, description, total, unit
        self.done, self.tokens, self.stats = 0, 0, {}
        self.started = self.last = time.perf_counter()

    def advance(self, amount: int = 1, **stats: float) -> None:
        self.done += amount
        self.tokens += int(stats.pop("tokens", 0))
        self.stats = stats
        if time.perf_counter() - self.last >= LINE_SECONDS:
            self.print()

    def finish(self) -> None:
        self.print()

    def print(self) -> None:
        self.last = now = time.perf_counter()
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.description} {self.done}/{self.total} {self.unit}"]
        parts.append(f"{rate:.2f} {self.unit}/s")
        if self.tokens:
            parts.append(f"{self.tokens / elapsed:.0f} tok/s")
        parts.append(f"{_duration(elapsed)} elapsed")
        if rate > 0 and self.done < self.total:
            parts.append(f"eta {_duration((self.total - self.done) / rate)}")
        parts += [f"{k} {v:.4g}" for k, v in self.stats.items()]
        self.console.print(" · ".join(parts), highlight=False, soft_wrap=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def fmt(value: Any, digits: int = 3) -> str:
    """Table cell text: numbers rounded, missing values as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
