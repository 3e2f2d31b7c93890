"""LoRA students: only adapters train, checkpoints hold them alone, resume is exact, and
`retort merge` writes a plain model with the adapted model's logits."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from retort.cli.main import app
from retort.config import parse_lora
from retort.errors import ConfigError, ModelError
from retort.models.loading import load_model, resolve
from retort.models.lora import merge_run
from retort.models.students import load_student
from retort.teachers.local import LocalTeacher
from retort.train.loop import distill
from tests.train.test_loop import StopAt, metrics, settings

LORA = {"r": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]}


def test_the_lora_flag_reads_targets_with_commas():
    assert parse_lora("r=16,alpha=32,targets=q_proj,v_proj") == {
        "r": 16,
        "alpha": 32,
        "targets": ["q_proj", "v_proj"],
    }
    assert parse_lora("r=8")["r"] == 8
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        parse_lora("r=8,q_proj")


def test_lora_trains_only_adapters_and_merge_reproduces_the_adapted_logits(
    tiny_model_dir, tiny_store, tmp_path
):
    teacher = LocalTeacher.load(str(tiny_model_dir))
    base_before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    config = settings(
        tiny_model_dir,
        tiny_store,
        tmp_path / "run",
        lora=LORA,
        objective="sft",
        batch_size=16,  # the whole store every step: the loss falls step by step
        learning_rate=1e-2,
        max_steps=4,
    )
    result = distill(config, teacher=teacher)
    losses = [m["loss"] for m in metrics(result.run_dir)]
    assert losses[-1] < losses[0]

    state = torch.load(
        result.run_dir / "checkpoints" / "step-000004" / "state.pt", weights_only=False
    )
    trained = [k for k in state["model"] if "lora_" in k]
    assert trained and all("lora_" in k for k in state["model"])  # adapters only

    from peft import PeftModel

    base, _ = load_student("prune:2", teacher)
    adapted = PeftModel.from_pretrained(base, result.final_dir).eval()
    assert all(  # the base weights under the adapter are the untouched pruned teacher
        torch.equal(v, base_before[k]) for k, v in teacher.model.state_dict().items()
    )
    merged_dir = merge_run(result.run_dir)
    merged = load_model(resolve(str(merged_dir))).eval()
    ids = torch.tensor([[5, 17, 42, 99, 3, 8]])
    with torch.no_grad():
        want = adapted(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    assert not any("lora" in k for k in merged.state_dict())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    untuned = load_student("prune:2", teacher)[0].eval()
    with torch.no_grad():
        assert not torch.allclose(untuned(input_ids=ids).logits, want)


def test_lora_resume_is_exact(tiny_model_dir, tiny_store, tmp_path):
    overrides = {"lora": LORA, "save_every": 100}
    straight = distill(settings(tiny_model_dir, tiny_store, tmp_path / "a", **overrides))
    stopped = settings(tiny_model_dir, tiny_store, tmp_path / "b", **overrides)
    with pytest.raises(KeyboardInterrupt):
        distill(stopped, progress=StopAt(3))
    resumed = distill(stopped, resume=True)
    assert [m["loss"] for m in metrics(resumed.run_dir)] == [
        m["loss"] for m in metrics(straight.run_dir)
    ]


def test_a_lora_run_is_used_as_a_student_only_after_merge(tiny_model_dir, tiny_store, tmp_path):
    run = distill(settings(tiny_model_dir, tiny_store, tmp_path / "run", lora=LORA, max_steps=1))
    with pytest.raises(ModelError, match="retort merge"):
        load_student(str(run.run_dir), None)
    result = CliRunner().invoke(app, ["merge", str(run.run_dir)])
    assert result.exit_code == 0, result.output
    model, _ = load_student(str(run.run_dir), None)
    assert "Llama" in type(model).__name__


def test_unknown_lora_targets_are_a_config_error(tiny_model_dir, tiny_store, tmp_path):
    bad = {**LORA, "targets": ["qkv"]}
    with pytest.raises(ConfigError, match=r"lora\.targets"):
        distill(settings(tiny_model_dir, tiny_store, tmp_path / "run", lora=bad, max_steps=1))
    assert not (tmp_path / "run").exists()


def test_merging_a_full_run_says_it_is_already_a_model(tiny_model_dir, tiny_store, tmp_path):
    run = distill(settings(tiny_model_dir, tiny_store, tmp_path / "run", max_steps=1))
    with pytest.raises(ModelError, match="already a complete model"):
        merge_run(run.run_dir)
    assert json.loads((run.final_dir / "config.json").read_text())["num_hidden_layers"] == 2


def test_a_lora_run_on_an_importance_pruned_base_merges_from_what_it_kept(
    tiny_model_dir, tiny_store, tmp_path
):
    # The adapters sit on a base measured once; merge (and resume) rebuild that base from the
    # run's pruned.json, not by measuring importance again.
    spec = "prune:2:importance:mlp=48"
    config = settings(
        tiny_model_dir, tiny_store, tmp_path / "run", lora=LORA, max_steps=2, student=spec
    )
    run = distill(config).run_dir
    kept = json.loads((run / "pruned.json").read_text())
    assert kept["spec"] == spec and len(kept["layers"]) == 2 and len(kept["mlp"][0]) == 48
    result = CliRunner().invoke(app, ["merge", str(run)])
    assert result.exit_code == 0, result.output
    merged, _ = load_student(str(run), None)
    assert merged.config.intermediate_size == 48
    assert merged.config.retort_pruned["layers"] == kept["layers"]
