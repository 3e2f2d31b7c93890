"""Resume restores every random stream of every process: each rank its own CPU, CUDA, Python
and NumPy generators (dropout in a LoRA or GPT-2-style student draws from them)."""

from __future__ import annotations

import random

import numpy as np
import torch

from retort.train import checkpoint


def parts():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return model, optimizer, scheduler


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def draws() -> tuple[list[float], float, float]:
    return torch.rand(3).tolist(), random.random(), float(np.random.rand())


def test_each_process_resumes_its_own_rng_streams(tmp_path):
    states = []
    for rank in range(2):  # what two DDP processes hold when the checkpoint is written
        seed_everything(100 + rank)
        states.append(checkpoint.rng_state())
    path = checkpoint.save(tmp_path, 1, *parts(), {}, rng_states=states)
    for rank in (1, 0):
        seed_everything(7)  # whatever the process drew before resuming
        checkpoint.load(path, *parts(), rank=rank)
        got = draws()
        seed_everything(100 + rank)
        assert got == draws(), rank


def test_a_checkpoint_without_this_process_state_gives_it_the_first_process_state(tmp_path):
    # Resumed with more processes than wrote it (or a checkpoint from before per-rank states).
    model, optimizer, scheduler = parts()  # built first: initialising weights draws numbers
    seed_everything(5)
    path = checkpoint.save(tmp_path, 1, model, optimizer, scheduler, {})
    seed_everything(9)
    checkpoint.load(path, *parts(), rank=3)
    got = draws()
    seed_everything(5)
    assert got == draws()


def test_cuda_rng_of_every_device_is_saved_and_restored(tmp_path, monkeypatch):
    # No GPU here: stand-ins for torch.cuda's generators check what is saved and set back.
    devices = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3, 4], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [d.clone() for d in devices])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.extend(states))
    saved = checkpoint.rng_state()
    other = checkpoint.rng_state()
    other["cuda"] = [torch.tensor([9, 9], dtype=torch.uint8)] * 2
    path = checkpoint.save(tmp_path, 1, *parts(), {}, rng_states=[other, saved])
    checkpoint.load(path, *parts(), rank=1)
    assert [t.tolist() for t in restored] == [[1, 2], [3, 4]]
