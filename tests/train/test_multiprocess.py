"""Two processes under `accelerate launch` (DDP over gloo, on CPU) train exactly like one
process with the same global batch: same data, same loss at every step, same weights."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from tests.train.launch import (
    ACCELERATE,
    RESUME_DRIVER,
    distill_command,
    losses,
    one_process,
    two_processes,
)


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate's launcher is not installed")
@pytest.mark.parametrize(
    "extra", [(), ("--lora", "r=4,alpha=8,targets=q_proj,v_proj")], ids=["full", "lora"]
)
def test_two_processes_with_batch_b_equal_one_process_with_batch_2b(
    extra, tiny_model_dir, tiny_store, tmp_path
):
    one = tmp_path / "one"
    one_process(distill_command(tiny_model_dir, tiny_store, one, 8, extra))
    two = tmp_path / "two"
    done = two_processes(distill_command(tiny_model_dir, tiny_store, two, 4, extra))
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


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate's launcher is not installed")
def test_two_processes_resume_each_with_its_own_rng_streams(tiny_model_dir, tiny_store, tmp_path):
    # LoRA dropout draws from each process's CPU generator, and the processes' batches differ
    # in length, so their streams part after the first step: a resumed process that takes
    # another's stream drops other units than the uninterrupted run did.
    driver = tmp_path / "driver.py"
    driver.write_text(RESUME_DRIVER)
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
    done = two_processes([str(driver), json.dumps(values)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(losses(tmp_path / "stopped")) == 4
    assert losses(tmp_path / "stopped") == losses(tmp_path / "straight")  # bitwise, on CPU
