"""Held-out evaluation during training: scored into metrics.jsonl and TensorBoard, equal to
`retort eval`'s numbers, and invisible to training and to exact resume."""

from __future__ import annotations

import json

import pytest

from retort.config import DistillConfig, GenerateConfig
from retort.errors import ModelError
from retort.train.loop import distill
from tests.train.test_loop import StopAt, metrics, settings


def lines(run_dir, split):
    return [m for m in metrics(run_dir) if m.get("split", "train") == split]


def test_evaluation_during_training_changes_no_loss_and_survives_resume(
    tiny_model_dir, tiny_store, tmp_path
):
    plain = distill(settings(tiny_model_dir, tiny_store, tmp_path / "plain", save_every=100))
    scored = settings(
        tiny_model_dir, tiny_store, tmp_path / "scored", save_every=100, eval_data=tiny_store
    ).model_copy(update={"eval_every": 2})
    with pytest.raises(KeyboardInterrupt):
        distill(scored, progress=StopAt(3))
    resumed = distill(scored, resume=True)

    expected = [m["loss"] for m in metrics(plain.run_dir)]
    assert [m["loss"] for m in lines(resumed.run_dir, "train")] == expected  # bitwise, on CPU
    evals = lines(resumed.run_dir, "eval")
    assert [m["step"] for m in evals] == [0, 2, 4, 6]  # once each, across the Ctrl-C
    assert all({"nll", "top1_agreement", "kl"} <= set(m) for m in evals)
    assert evals[-1]["nll"] < evals[0]["nll"]  # the student learned the teacher's tokens


def test_the_last_held_out_score_is_what_retort_eval_gives_the_final_student(
    tiny_model_dir, tiny_store, tmp_path
):
    from retort.evaluate.run import evaluate
    from retort.models.students import load_student
    from retort.teachers.local import LocalTeacher

    config = settings(tiny_model_dir, tiny_store, tmp_path / "run", eval_data=tiny_store)
    result = distill(config.model_copy(update={"eval_every": 3}))
    last = lines(result.run_dir, "eval")[-1]
    teacher = LocalTeacher.load(str(tiny_model_dir))
    final = load_student(str(result.final_dir), teacher)[0]
    report = evaluate(teacher, {"final": final}, tiny_store, speed_tokens=2, answer_tokens=2)
    scores = next(m for m in report["models"] if m["name"] == "final")
    for name in ("nll", "top1_agreement", "kl"):
        assert last[name] == pytest.approx(scores[name], rel=1e-4, abs=1e-6)


def test_held_out_scores_reach_tensorboard_under_eval(tiny_model_dir, tiny_store, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = settings(
        tiny_model_dir, tiny_store, tmp_path / "run", eval_data=tiny_store, trackers=["tensorboard"]
    )
    result = distill(config.model_copy(update={"eval_every": 3, "max_steps": 3}))
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"eval/nll", "eval/kl", "train/loss"} <= set(tags)
    assert [e.step for e in events.Scalars("eval/nll")] == [0, 3]


def test_a_held_out_store_of_another_tokenizer_is_refused_before_the_run_folder(
    tiny_model_dir, tiny_store, other_tokenizer_model_dir, tmp_path
):
    from retort.capture.runner import generate

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "a", "prompt": "Name a colour."}) + "\n")
    other = tmp_path / "other-store"
    generate(
        GenerateConfig(
            teacher=str(other_tokenizer_model_dir), prompts=prompts, out=other, max_new_tokens=4
        )
    )
    config = settings(tiny_model_dir, tiny_store, tmp_path / "run", eval_data=other)
    with pytest.raises(ModelError, match=r"--eval-data .*other-store: made with another tokenizer"):
        distill(config)
    assert not (tmp_path / "run").exists()


def test_eval_settings_may_change_on_resume(tiny_model_dir, tiny_store, tmp_path):
    config = settings(tiny_model_dir, tiny_store, tmp_path / "run", max_steps=2, save_every=1)
    distill(config)
    longer = DistillConfig(
        **{**config.model_dump(), "max_steps": 4, "eval_data": tiny_store, "eval_every": 1}
    )
    distill(longer, resume=True)
    assert [m["step"] for m in lines(tmp_path / "run", "eval")] == [3, 4]
