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


def test_teacher_forced_details_add_up_to_the_totals(tiny_model_dir, tiny_store):
    from retort.evaluate.metrics import teacher_forced
    from retort.models.students import load_student
    from retort.progress import Silent
    from retort.train.data import examples_from_rows

    teacher = LocalTeacher.load(str(tiny_model_dir))
    student = load_student("prune:2", teacher)[0]
    rows = Store.open(tiny_store).read_table().to_pylist()
    examples = examples_from_rows(rows, 512)
    targets = sum(len(e.input_ids) - e.prompt_length for e in examples)
    pad, vocab = teacher.tokenizer.pad_token_id, len(teacher.tokenizer)
    models = {"teacher": teacher.model, "student": student}
    got = teacher_forced(models, teacher.model, examples, pad, vocab, 3, Silent(), details=True)
    for scores in got.values():
        by_position = scores["by_position"]
        assert sum(by_position["tokens"]) == targets
        weights = [n / targets for n in by_position["tokens"]]
        for name in ("top1_agreement", "kl"):
            pooled = sum(w * v for w, v in zip(weights, by_position[name], strict=True))
            assert pooled == pytest.approx(scores[name], rel=1e-5, abs=1e-9)
        assert len(scores["row_nll"]) == len(examples)
    assert got["teacher"]["top1_agreement"] == 1.0 and got["teacher"]["kl"] < 1e-6
    assert got["student"]["kl"] > 0.0
    # the teacher's NLL of its stored tokens is its own logprobs of them, from another code path
    scored = teacher.token_logprobs([e.input_ids for e in examples])
    expected = (
        -sum(sum(s[e.prompt_length - 1 :]) for s, e in zip(scored, examples, strict=True)) / targets
    )
    assert got["teacher"]["nll"] == pytest.approx(expected, rel=1e-4)
    # no teacher: NLL only, the same number
    alone = teacher_forced({"student": student}, None, examples, pad, vocab, 4, Silent())
    assert set(alone["student"]) == {"nll"}
    assert alone["student"]["nll"] == pytest.approx(got["student"]["nll"], rel=1e-5)


def test_a_teacher_cache_gives_the_same_scores_without_the_teachers_forward(
    tiny_model_dir, tiny_store
):
    from retort.evaluate.metrics import teacher_forced
    from retort.models.students import load_student
    from retort.progress import Silent
    from retort.train.data import examples_from_rows

    teacher = LocalTeacher.load(str(tiny_model_dir))
    student = load_student("prune:2", teacher)[0]
    examples = examples_from_rows(Store.open(tiny_store).read_table().to_pylist(), 512)
    pad, vocab = teacher.tokenizer.pad_token_id, len(teacher.tokenizer)
    args = ({"student": student}, teacher.model, examples, pad, vocab, 3, Silent())
    plain = teacher_forced(*args, details=True)
    cache: dict = {}
    first = teacher_forced(*args, details=True, teacher_cache=cache)
    assert len(cache) == -(-len(examples) // 3)  # one entry per batch

    def broken_forward(*_, **__):
        raise AssertionError("the teacher ran although its logits were cached")

    original = teacher.model.forward
    teacher.model.forward = broken_forward
    try:
        again = teacher_forced(*args, details=True, teacher_cache=cache)
    finally:
        teacher.model.forward = original
    assert plain == first == again
