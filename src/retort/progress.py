"""How long work reports progress without printing: library code calls a ``Progress``.

The CLI passes a rich progress bar; library users pass nothing (``Silent``) or their own.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives progress of one stage of work at a time."""

    def start(self, description: str, total: int, unit: str = "items") -> None:
        """A stage begins with ``total`` units of work."""
        ...

    def advance(self, amount: int = 1, **stats: float) -> None:
        """``amount`` more units are done; ``stats`` are shown beside the bar (e.g. loss)."""
        ...

    def finish(self) -> None:
        """The stage ended (done or interrupted)."""
        ...


class Silent:
    """A Progress that shows nothing."""

    def start(self, description: str, total: int, unit: str = "items") -> None:
        pass

    def advance(self, amount: int = 1, **stats: float) -> None:
        pass

    def finish(self) -> None:
        pass
