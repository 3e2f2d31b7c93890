"""--fsdp under two CPU processes (gloo): sharded students and teachers train like unsharded
ones, resume exactly, and leave a final/ that plain from_pretrained loads."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from retort.config import DistillConfig, build
from retort.errors import ConfigError
from tests.train.launch import (
    ACCELERATE,
    RESUME_DRIVER,
    distill_command,
    losses,
    one_process,
    two_processes,
)

needs_launcher = pytest.mark.skipif(
    not ACCELERATE.exists(), reason="accelerate's launcher is not installed"
)


def assert_same_run(got, want, tolerance=1e-5):
    """Loss at every step and final weights, relative to their size: the sharded run sums
    gradients in another order (reduce-scatter against all-reduce or one process), so the
    last bits differ; 1e-5 is ~100x float32 rounding, and far below one step's change."""
    assert len(losses(got)) == len(losses(want)) == 3
    for a, b in zip(losses(got), losses(want), strict=True):
        assert abs(a - b) <= tolerance * abs(b)
    weights_got = load_file(got / "final" / "model.safetensors")
    weights_want = load_file(want / "final" / "model.safetensors")
    assert weights_got.keys() == weights_want.keys()
    for name, value in weights_want.items():
        assert (weights_got[name] - value).abs().max() <= tolerance, name


def first_record(run):
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[0])


@needs_launcher
@pytest.mark.parametrize(
    "fsdp,extra",
    [
        ("student", ()),  # the fused path reads the gathered output layer after each forward
        ("student,teacher", ()),
        ("student,teacher", ("--set", "fused=false", "--hidden-weight", "0.5")),
    ],
    ids=["student-fused", "both-fused", "both-logits-hidden"],
)
def test_two_sharded_processes_with_batch_b_equal_one_process_with_batch_2b(
    fsdp, extra, tiny_model_dir, tiny_store, tmp_path
):
    one = tmp_path / "one"
    one_process(distill_command(tiny_model_dir, tiny_store, one, 8, extra))
    two = tmp_path / "two"
    done = two_processes(
        distill_command(tiny_model_dir, tiny_store, two, 4, (*extra, "--fsdp", fsdp))
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(two, one)
    held_one, held_two = first_record(one), first_record(two)
    for key in ("student_weights_mib", "optimizer_state_mib"):  # about half each (padding)
        assert 0.45 < held_two[key] / held_one[key] < 0.6, key
    teacher_share = held_two["teacher_weights_mib"] / held_one["teacher_weights_mib"]
    assert teacher_share == pytest.approx(0.5 if "teacher" in fsdp else 1.0, abs=0.05)
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(two / "final")  # no FSDP class leaks out
    assert type(plain).__name__ == "LlamaForCausalLM"
    saved = json.loads((two / "final" / "config.json").read_text())
    assert saved["architectures"] == ["LlamaForCausalLM"]


@needs_launcher
def test_on_policy_with_a_sharded_teacher_equals_an_unsharded_one(
    tiny_model_dir, tiny_store, tmp_path
):
    # Samples are seeded per process, so two sharded processes are compared with two DDP
    # ones: the same samples (each process decodes until all are done, synced) and the same
    # teacher scores whether the teacher's layers are gathered or whole.
    on_policy = ("--objective", "on_policy", "--kind", "reverse_kl")
    on_policy += ("--set", "sample_max_new_tokens=6", "--eval-data", str(tiny_store))
    on_policy += ("--eval-every", "2", "--set", "eval_rows=4")
    ddp, sharded = tmp_path / "ddp", tmp_path / "sharded"
    done = two_processes(distill_command(tiny_model_dir, tiny_store, ddp, 4, on_policy))
    assert done.returncode == 0, done.stderr[-3000:]
    extra = (*on_policy, "--fsdp", "student,teacher")
    done = two_processes(distill_command(tiny_model_dir, tiny_store, sharded, 4, extra))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(sharded, ddp)
    records = [json.loads(line) for line in (sharded / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "nll" in r] == [0, 2, 3]  # held-out, all processes


@needs_launcher
def test_a_sharded_run_resumes_exactly(tiny_model_dir, tiny_store, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(RESUME_DRIVER)
    values = {
        "data": str(tiny_store),
        "student": "prune:2",
        "teacher": str(tiny_model_dir),
        "objective": "online",
        "fsdp": ["student", "teacher"],
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
    stopped = tmp_path / "stopped"
    interrupted = stopped / "checkpoints" / "step-000002"  # the one resumed from
    shards = sorted(p.name for p in (interrupted / "sharded").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]  # each process wrote its own shard
    assert losses(stopped) == losses(tmp_path / "straight")  # bitwise, on CPU
    weights = load_file(stopped / "final" / "model.safetensors")
    for name, value in load_file(tmp_path / "straight" / "final" / "model.safetensors").items():
        assert weights[name].equal(value), name


@pytest.mark.parametrize(
    "values,message",
    [
        ({"fsdp": ["student", "student"]}, "names a model twice"),
        ({"fsdp": ["teacher"], "teacher_device": "cpu"}, "drop teacher_device"),
        (
            {"fsdp": ["student"], "lora": {"r": 4, "alpha": 8, "targets": ["q_proj"]}},
            "shard the teacher alone",
        ),
        ({"fsdp": ["gpu"]}, "fsdp.0"),
    ],
)
def test_settings_that_cannot_be_sharded_are_refused_in_one_line(values, message):
    base = {"data": "store", "out": "run", "student": "prune:2", "teacher": "t"}
    base["objective"] = "online"
    with pytest.raises(ConfigError, match=message) as error:
        build(DistillConfig, {**base, **values}, "retort distill")
    assert "\n" not in str(error.value)


def test_fsdp_with_one_process_says_how_to_start_several(tiny_model_dir, tiny_store, tmp_path):
    from retort.train.loop import distill

    config = DistillConfig(
        data=tiny_store,
        out=tmp_path / "run",
        student="prune:2",
        teacher=str(tiny_model_dir),
        objective="online",
        fsdp=["student"],
    )
    with pytest.raises(ConfigError, match="accelerate launch --multi_gpu"):
        distill(config)


def test_dry_run_of_a_sharded_recipe_times_it_unsharded(tiny_model_dir, tiny_store, tmp_path):
    from retort.train.plan import dry_run

    config = DistillConfig(
        data=tiny_store,
        out=tmp_path / "run",
        student="prune:2",
        teacher=str(tiny_model_dir),
        objective="online",
        fsdp=["student", "teacher"],
    )
    plan = dry_run(config, timed_steps=2)
    assert plan["seconds_per_step"] > 0
    assert plan["fsdp"].startswith("student and teacher")
    assert not (tmp_path / "run").exists()


@needs_launcher
def test_mixed_precision_autocasts_a_sharded_student_as_it_does_a_ddp_one(
    tiny_model_dir, tiny_store, tmp_path
):
    # prepare() autocasts a DDP student's forward; the sharded one bypasses prepare, so the
    # loop wraps its forward itself. Without that, bf16 would silently train in float32.
    bf16 = ("--set", "mixed_precision=bf16")
    fp32, ddp, sharded = tmp_path / "fp32", tmp_path / "ddp", tmp_path / "sharded"
    one_process(distill_command(tiny_model_dir, tiny_store, fp32, 8))
    done = two_processes(distill_command(tiny_model_dir, tiny_store, ddp, 4, bf16))
    assert done.returncode == 0, done.stderr[-3000:]
    extra = (*bf16, "--fsdp", "student")
    done = two_processes(distill_command(tiny_model_dir, tiny_store, sharded, 4, extra))
    assert done.returncode == 0, done.stderr[-3000:]
    for got, want, full in zip(losses(sharded), losses(ddp), losses(fp32), strict=True):
        assert abs(got - want) <= 1e-3 * abs(want)
        assert abs(got - full) > 10 * abs(got - want)  # bf16 rounding, not float32's
