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
