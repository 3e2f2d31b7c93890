"""`retort distill --dry-run` prints the plan and writes nothing; metrics reach TensorBoard."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from retort.cli.main import app
from retort.config import DistillConfig
from retort.errors import ConfigError
from retort.train.loop import distill
from retort.train.plan import dry_run
from tests.train.test_loop import settings


def test_dry_run_prints_the_plan_and_leaves_no_run_folder(tiny_model_dir, tiny_store, tmp_path):
    out = tmp_path / "run"
    args = ["distill", "--data", str(tiny_store), "--out", str(out), "--student", "prune:2"]
    args += ["--teacher", str(tiny_model_dir), "--objective", "on_policy", "--lmbda", "0.5"]
    args += ["--lora", "r=4,alpha=8,targets=q_proj,v_proj", "--max-tokens", "2000"]
    result = CliRunner().invoke(app, [*args, "--dry-run"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for line in ("trainable parameters", "tokens per step", "memory mib", "estimated minutes"):
        assert line in result.output
    assert "packed" in result.output and "True" in result.output
    assert not out.exists()


def test_the_plan_counts_what_the_run_will_do(tiny_model_dir, tiny_store, tmp_path):
    config = settings(tiny_model_dir, tiny_store, tmp_path / "run", batch_size=4, grad_accum=2)
    plan = dry_run(config)
    assert plan["trainable_parameters"] == plan["student_parameters"] > 0
    assert plan["sequences_per_step"] == 8
    assert plan["steps"] == 6
    assert 0 < plan["tokens_per_step"] <= 8 * 12  # the store's completions are ≤ 12 tokens
    assert plan["seconds_per_step"] > 0 and plan["memory_mib"] > 0
    # a top-k run's teacher is the store (it is loaded only to prune the student)
    assert plan["teacher"] == "the store's top-8 logprobs per token (no live teacher)"
    assert plan["packed"] is True and plan["kept_layers"] == [0, 3]  # prune:2 of 4 layers
    with_lora = {**config.model_dump(), "lora": {"r": 2, "targets": ["q_proj"]}}
    lora = dry_run(DistillConfig(**with_lora))
    assert 0 < lora["trainable_parameters"] < plan["trainable_parameters"] / 10


def test_tensorboard_receives_every_logged_term(tiny_model_dir, tiny_store, tmp_path):
    pytest.importorskip("tensorboard")  # a dev dependency: present in make test
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = distill(settings(tiny_model_dir, tiny_store, tmp_path / "run", max_steps=3))
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/kd", "train/captured_mass", "train/lr"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]


def test_an_uninstalled_tracker_is_refused_before_training(tiny_model_dir, tiny_store, tmp_path):
    pytest.importorskip("tensorboard")
    config = settings(tiny_model_dir, tiny_store, tmp_path / "run", trackers=["wandb"])
    try:
        import wandb  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"pip install 'retort\[wandb\]'"):
            distill(config)
