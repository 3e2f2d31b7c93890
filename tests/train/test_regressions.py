"""Regression tests for defects found in review: each named for the behaviour it protects."""

from __future__ import annotations

import json
import shutil
import signal

import pytest
import torch

from retort.capture.store import Store
from retort.errors import ConfigError
from retort.train.loop import distill
from tests.train.test_loop import StopAt, metrics, settings


def test_topk_reverse_kl_keeps_weights_finite(tiny_model_dir, tiny_store, tmp_path):
    # Prompt and padding positions once held a one-hot teacher; reverse KL against it is +inf,
    # masked in value but NaN in gradient, which destroyed the weights after one step.
    result = distill(
        settings(tiny_model_dir, tiny_store, tmp_path / "r", kind="reverse_kl", max_steps=3)
    )
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics(result.run_dir))
    state = torch.load(
        next((result.run_dir / "checkpoints").glob("step-*")) / "state.pt", weights_only=False
    )
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_sigint_stops_at_a_step_boundary_and_resumes_exactly(tiny_model_dir, tiny_store, tmp_path):
    straight = distill(settings(tiny_model_dir, tiny_store, tmp_path / "a", save_every=100))
    config = settings(tiny_model_dir, tiny_store, tmp_path / "b", save_every=100)
    with pytest.raises(KeyboardInterrupt):
        distill(config, progress=StopAt(2, lambda: signal.raise_signal(signal.SIGINT)))
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step-000002"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    resumed = distill(config, resume=True)
    expected = [m["loss"] for m in metrics(straight.run_dir)]
    assert [m["loss"] for m in metrics(resumed.run_dir)] == expected  # bitwise, on CPU


def test_resume_refuses_a_store_whose_rows_changed(tiny_model_dir, tiny_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    config = settings(tiny_model_dir, store, tmp_path / "run", max_steps=2, save_every=1)
    distill(config)
    opened = Store.open(store)
    row = opened.read_table().to_pylist()[0]
    opened.append([{**row, "id": "one-more"}])
    with pytest.raises(ConfigError, match="store's rows changed"):
        distill(
            settings(tiny_model_dir, store, tmp_path / "run", max_steps=4, save_every=1),
            resume=True,
        )


def test_a_run_stopped_before_its_first_checkpoint_starts_again(
    tiny_model_dir, tiny_store, tmp_path
):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("student: prune:2\n")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    result = distill(settings(tiny_model_dir, tiny_store, run, max_steps=2))
    assert [m["step"] for m in metrics(result.run_dir)] == [1, 2]
    again = distill(
        settings(tiny_model_dir, tiny_store, tmp_path / "r2", max_steps=2), resume=True
    )  # --resume on a fresh folder starts at step 0 too
    assert again.steps == 2


def test_max_seq_len_shorter_than_every_prompt_is_a_config_error(
    tiny_model_dir, tiny_store, tmp_path
):
    with pytest.raises(ConfigError, match="max_seq_len 8: every prompt"):
        distill(settings(tiny_model_dir, tiny_store, tmp_path / "run", max_seq_len=8))
    assert not (tmp_path / "run").exists()


def test_out_that_is_a_file_is_a_config_error(tiny_model_dir, tiny_store, tmp_path):
    target = tmp_path / "file"
    target.write_text("mine")
    with pytest.raises(ConfigError, match="--out is a file"):
        distill(settings(tiny_model_dir, tiny_store, target))
    assert target.read_text() == "mine"
