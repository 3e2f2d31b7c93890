"""Regression tests for defects found in review: each named for the behaviour it protects."""

from __future__ import annotations

import json
import shutil
import signal

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from retort.capture.store import Store
from retort.errors import ConfigError
from retort.train import checkpoint
from retort.train.loop import distill
from tests.conftest import build_tiny_model, save_model
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


def test_a_second_ctrl_c_cannot_checkpoint_a_step_whose_update_is_applied_but_not_counted(
    tiny_model_dir, tiny_store, tmp_path
):
    # Ctrl-C twice, the second while the optimizer has applied step 2's update but the loop has
    # not counted it yet: a checkpoint named step 1 would hold step 2's weights, and a resumed
    # run would apply step 2 twice.
    steps = []

    def press_twice(optimizer, args, kwargs):
        if type(optimizer) is torch.optim.AdamW:
            steps.append(1)
            if len(steps) == 2:
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)

    hook = register_optimizer_step_post_hook(press_twice)
    try:
        with pytest.raises(KeyboardInterrupt):
            distill(settings(tiny_model_dir, tiny_store, tmp_path / "run", save_every=100))
    finally:
        hook.remove()
    saved = checkpoint.list_checkpoints(tmp_path / "run")
    assert [p.name for p in saved] == ["step-000002"]
    state = torch.load(saved[-1] / "state.pt", weights_only=False)
    updates = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert updates == {2}  # AdamW's own count of applied updates


def test_the_hidden_projector_is_a_function_of_the_run_seed(
    tiny_model_dir, tiny_tokenizer, tiny_store, tmp_path
):
    # A student narrower than the teacher gets a learned projection; it was initialised from
    # whatever the global generator held before the run set its seed.
    narrow = save_model(
        build_tiny_model(tiny_tokenizer, layers=2, hidden=32), tiny_tokenizer, tmp_path / "narrow"
    )
    projectors = []
    for before in (1, 2):
        torch.manual_seed(before)
        out = tmp_path / f"run{before}"
        config = settings(
            tiny_model_dir,
            tiny_store,
            out,
            student=str(narrow),
            objective="online",
            hidden_weight=1.0,
            max_steps=1,
        )
        distill(config)
        state = torch.load(out / "checkpoints" / "step-000001" / "state.pt", weights_only=False)
        projectors.append(state["extra"]["projector"])
    assert projectors[0].keys() == projectors[1].keys() and projectors[0]
    for name, value in projectors[0].items():
        assert torch.equal(value, projectors[1][name]), name
