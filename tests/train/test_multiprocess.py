"""Two processes under `accelerate launch` (DDP over gloo, on CPU) train exactly like one
process with the same global batch: same data, same loss at every step, same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

ACCELERATE = Path(sys.executable).with_name("accelerate")


def distill_command(tiny_model_dir, tiny_store, out, batch_size: int, extra=()) -> list[str]:
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


def losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate's launcher is not installed")
@pytest.mark.parametrize(
    "extra", [(), ("--lora", "r=4,alpha=8,targets=q_proj,v_proj")], ids=["full", "lora"]
)
def test_two_processes_with_batch_b_equal_one_process_with_batch_2b(
    extra, tiny_model_dir, tiny_store, tmp_path
):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RETORT_LOG": "ERROR"}
    one = tmp_path / "one"
    subprocess.run(
        [sys.executable, *distill_command(tiny_model_dir, tiny_store, one, 8, extra)],
        check=True,
        capture_output=True,
        env=env,
    )
    two = tmp_path / "two"
    # --multi_gpu is accelerate's torchrun launcher; on a machine without CUDA retort asks
    # accelerate for a CPU (gloo) group. (--cpu alone starts one process unless mpirun exists.)
    launch = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    done = subprocess.run(
        [*launch, *distill_command(tiny_model_dir, tiny_store, two, 4, extra)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(losses(two)) == 3
    for got, want in zip(losses(two), losses(one), strict=True):
        assert abs(got - want) <= 1e-5 * abs(want)  # relative: the losses are small here
    weights = "adapter_model.safetensors" if extra else "model.safetensors"
    weights_one = load_file(one / "final" / weights)
    weights_two = load_file(two / "final" / weights)
    assert weights_one.keys() == weights_two.keys()
    for name, value in weights_one.items():
        assert (weights_two[name] - value).abs().max() <= 1e-5, name


DRIVER = """
import json, sys
from retort.config import DistillConfig
from retort.train.loop import distill

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
"""


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate's launcher is not installed")
def test_two_processes_resume_each_with_its_own_rng_streams(tiny_model_dir, tiny_store, tmp_path):
    # LoRA dropout draws from each process's CPU generator, and the processes' batches differ
    # in length, so their streams part after the first step: a resumed process that takes
    # another's stream drops other units than the uninterrupted run did.
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    values = {
        "data": str(tiny_store),
        "student": "prune:2",
        "teacher": str(tiny_model_dir),
        "objective": "topk",
        "lora": {"r": 4, "alpha": 8, "dropout": 0.3, "targets": ["q_proj", "v_proj"]},
        "max_steps": 4,
        "batch_size": 4,
        "learning_rate": 3e-2,
        "warmup_steps": 0,
        "save_every": 100,
        "trackers": [],
        "straight": str(tmp_path / "straight"),
        "stopped": str(tmp_path / "stopped"),
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RETORT_LOG": "ERROR"}
    launch = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    done = subprocess.run(
        [*launch, str(driver), json.dumps(values)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(losses(tmp_path / "stopped")) == 4
    assert losses(tmp_path / "stopped") == losses(tmp_path / "straight")  # bitwise, on CPU
