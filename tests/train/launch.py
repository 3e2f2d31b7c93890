"""Running `retort distill` (or a driver script) under `accelerate launch` with two CPU
processes: accelerate's torchrun launcher, a gloo group (retort asks for it without CUDA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ACCELERATE = Path(sys.executable).with_name("accelerate")
# --multi_gpu is accelerate's torchrun launcher; on a machine without CUDA retort asks
# accelerate for a CPU (gloo) group. (--cpu alone starts one process unless mpirun exists.)
TWO_PROCESSES = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2"]
TWO_PROCESSES += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RETORT_LOG": "ERROR"}


def distill_command(tiny_model_dir, tiny_store, out, batch_size: int, extra=()) -> list[str]:
    """3 steps of online JSD KD from the tiny teacher into a 2-layer prune of it."""
    return [
        "-m",
        "retort",
        "distill",
        "--data",
        str(tiny_store),
        "--out",
        str(out),
        "--student",
        "prune:2",
        "--teacher",
        str(tiny_model_dir),
        "--objective",
        "online",
        "--kind",
        "jsd",
        "--max-steps",
        "3",
        "--batch-size",
        str(batch_size),
        "--learning-rate",
        "3e-3",
        "--set",
        "warmup_steps=0",
        "--set",
        "trackers=[]",
        *extra,
    ]


def one_process(args: list[str]) -> None:
    subprocess.run([sys.executable, *args], check=True, capture_output=True, env=ENV)


def two_processes(args: list[str]) -> subprocess.CompletedProcess:
    """``args`` under two processes; the caller asserts on the return code (stderr kept)."""
    return subprocess.run([*TWO_PROCESSES, *args], capture_output=True, text=True, env=ENV)


def losses(run: Path) -> list[float]:
    """The training loss of every logged step (held-out records carry no loss)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


# A run straight through and the same run stopped after two steps and resumed, in one
# launch: argv[1] is the DistillConfig as JSON with both run folders.
RESUME_DRIVER = """
import json, sys
from retort.config import DistillConfig
from retort.train.loop import distill, leave_process_group

class StopAt:  # Ctrl-C on every process once two steps are done
    def start(self, *args, **kwargs): self.done = 0
    def advance(self, amount=1, **stats):
        self.done += amount
        if self.done == 2:
            raise KeyboardInterrupt
    def finish(self): pass

values = json.loads(sys.argv[1])
straight, stopped = values.pop("straight"), values.pop("stopped")
distill(DistillConfig(**values, out=straight))
stopped = DistillConfig(**values, out=stopped)
try:
    distill(stopped, progress=StopAt())
except KeyboardInterrupt:
    pass
distill(stopped, resume=True)
leave_process_group()
"""
