"""The training loop on tiny models: objectives learn, accumulation is exact, resume is exact."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from retort.config import DistillConfig, load_yaml
from retort.errors import ConfigError, ModelError
from retort.train.loop import distill


def settings(tiny_model_dir, tiny_store, out, **overrides) -> DistillConfig:
    values = {
        "data": tiny_store,
        "out": out,
        "student": "prune:2",
        "teacher": str(tiny_model_dir),
        "objective": "topk_kl",
        "max_steps": 6,
        "batch_size": 4,
        "learning_rate": 3e-3,
        "warmup_steps": 1,
        **overrides,
    }
    return DistillConfig(**values)


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("objective", ["sft", "topk_kl", "online_kl"])
def test_each_objective_lowers_its_loss_and_writes_the_run_folder(
    objective, tiny_model_dir, tiny_store, tmp_path
):
    config = settings(
        tiny_model_dir,
        tiny_store,
        tmp_path / "run",
        objective=objective,
        max_steps=12,
        batch_size=16,
    )  # the whole store every step
    result = distill(config)
    losses = [m["loss"] for m in metrics(result.run_dir)]
    assert len(losses) == 12
    assert losses[-1] < losses[0] * 0.9
    assert (result.run_dir / "config.yaml").is_file()
    assert (result.final_dir / "model.safetensors").is_file()
    if objective == "topk_kl":
        assert 0 < metrics(result.run_dir)[0]["captured_mass"] <= 1


def test_gradient_accumulation_gives_the_same_update_as_one_big_batch(
    tiny_model_dir, tiny_store, tmp_path
):
    big = distill(
        settings(
            tiny_model_dir, tiny_store, tmp_path / "big", max_steps=2, batch_size=8, grad_accum=1
        )
    )
    small = distill(
        settings(
            tiny_model_dir, tiny_store, tmp_path / "small", max_steps=2, batch_size=2, grad_accum=4
        )
    )
    for a, b in zip(metrics(big.run_dir), metrics(small.run_dir), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    state_big = torch.load(
        next((big.run_dir / "checkpoints").glob("step-*")) / "state.pt", weights_only=False
    )
    state_small = torch.load(
        next((small.run_dir / "checkpoints").glob("step-*")) / "state.pt", weights_only=False
    )
    for key, value in state_big["model"].items():
        torch.testing.assert_close(value, state_small["model"][key], rtol=1e-5, atol=1e-6)


class StopAt:
    """A progress receiver that presses Ctrl-C once ``step`` steps are done: by raising
    KeyboardInterrupt, or by ``press`` (e.g. sending a real SIGINT)."""

    def __init__(self, step: int, press=None) -> None:
        self.step, self.done, self.press = step, 0, press

    def start(self, description, total, unit="items"):
        pass

    def advance(self, amount=1, **stats):
        self.done += amount
        if self.done == self.step:
            if self.press is None:
                raise KeyboardInterrupt
            self.press()

    def finish(self):
        pass


def test_a_run_stopped_by_ctrl_c_and_resumed_logs_the_same_losses_as_an_uninterrupted_one(
    tiny_model_dir, tiny_store, tmp_path
):
    straight = distill(settings(tiny_model_dir, tiny_store, tmp_path / "a", save_every=100))
    stopped = settings(tiny_model_dir, tiny_store, tmp_path / "b", save_every=100)
    with pytest.raises(KeyboardInterrupt):
        distill(stopped, progress=StopAt(3))
    assert (tmp_path / "b" / "checkpoints" / "step-000003").is_dir()
    resumed = distill(stopped, resume=True)
    assert resumed.steps == 6
    expected = [m["loss"] for m in metrics(straight.run_dir)]
    assert [m["loss"] for m in metrics(resumed.run_dir)] == expected  # bitwise, on CPU


def test_an_existing_run_folder_is_not_overwritten(tiny_model_dir, tiny_store, tmp_path):
    distill(settings(tiny_model_dir, tiny_store, tmp_path / "run", max_steps=1))
    with pytest.raises(ConfigError, match="run folder exists; pass --resume"):
        distill(settings(tiny_model_dir, tiny_store, tmp_path / "run", max_steps=1))


def test_resume_with_other_settings_is_refused(tiny_model_dir, tiny_store, tmp_path):
    distill(settings(tiny_model_dir, tiny_store, tmp_path / "run", max_steps=2))
    with pytest.raises(ConfigError, match=r"learning_rate 0.003 → 0.1"):
        distill(
            settings(tiny_model_dir, tiny_store, tmp_path / "run", learning_rate=0.1), resume=True
        )


def test_a_run_saved_before_a_setting_existed_resumes_with_its_default(
    tiny_model_dir, tiny_store, tmp_path
):
    run = tmp_path / "run"
    distill(settings(tiny_model_dir, tiny_store, run, max_steps=2))
    saved = load_yaml(run / "config.yaml")
    del saved["fsdp"], saved["uld_weight"]  # what an older retort wrote
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    distill(settings(tiny_model_dir, tiny_store, run, max_steps=3), resume=True)
    assert [r["step"] for r in metrics(run)] == [1, 2, 3]


def test_a_student_with_another_tokenizer_is_refused_before_the_run_folder_exists(
    tiny_model_dir, other_tokenizer_model_dir, tiny_store, tmp_path
):
    config = settings(
        tiny_model_dir,
        tiny_store,
        tmp_path / "run",
        student=str(other_tokenizer_model_dir),
        objective="online_kl",
    )
    with pytest.raises(ModelError, match="tokenizer differs"):
        distill(config)
    assert not (tmp_path / "run").exists()
