"""The teacher-judged NLL of a model's own answers agrees with the logprobs the teacher gave
its tokens while writing them (two code paths: generation and teacher forcing)."""

from __future__ import annotations

import pytest

from retort.capture.store import Store
from retort.evaluate.metrics import answer_metrics
from retort.teachers.local import LocalTeacher
from retort.teachers.protocol import Sampling


def test_teacher_nll_of_its_own_greedy_answers_matches_generation(tiny_model_dir, tiny_store):
    teacher = LocalTeacher.load(str(tiny_model_dir))
    rows = Store.open(tiny_store).read_table().to_pylist()[:6]
    got = answer_metrics(teacher.model, teacher, rows, max_new_tokens=10, batch_size=3)
    written = [
        logprob
        for generation in teacher.generate(
            [r["prompt_token_ids"] for r in rows], Sampling(max_new_tokens=10), top_k=0
        )
        for logprob in generation.token_logprobs
    ]
    assert got["teacher_nll_of_answers"] == pytest.approx(-sum(written) / len(written), rel=1e-4)
    assert got["answer_length"] == len(written) / len(rows)


def test_eval_json_keeps_a_sample_of_prompts_with_every_models_answer(
    tiny_model_dir, tiny_store, tmp_path
):
    import json

    from retort.evaluate.run import SAMPLE_ROWS, evaluate
    from retort.models.students import load_student
    from retort.teachers.local import LocalTeacher

    teacher = LocalTeacher.load(str(tiny_model_dir))
    student = load_student("prune:2", teacher)[0]
    evaluate(teacher, {"prune:2": student}, tiny_store, tmp_path, speed_tokens=2)
    samples = json.loads((tmp_path / "eval.json").read_text())["samples"]
    assert len(samples) == SAMPLE_ROWS
    for sample in samples:
        assert sample["prompt"] and sample["stored_completion"] is not None
        assert set(sample["answers"]) == {"teacher", "prune:2"}
        assert all(isinstance(text, str) for text in sample["answers"].values())
