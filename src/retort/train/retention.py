"""How many checkpoints a run keeps on disk.

A checkpoint holds the trainable weights and AdamW's two moments: three times the student's
size (730 MB of the quickstart's 979 MB run folder). A run resumes from its newest one only, so
older ones are deleted; once ``final/`` is written, ``keep=0`` deletes the last one too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from retort.train.checkpoint import list_checkpoints


def prune_checkpoints(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints of ``run_dir``; returns the
    deleted folders. While the run has no ``final/``, the newest is always kept (it is what
    ``--resume`` continues from), whatever ``keep`` says."""
    if keep < 1 and not (run_dir / "final").is_dir():
        keep = 1
    checkpoints = list_checkpoints(run_dir)  # oldest first
    doomed = checkpoints[: max(len(checkpoints) - keep, 0)]
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)
    return doomed
