"""A store is one teacher's output: training or evaluating it against another teacher is refused
(naming both) unless the user says --allow-other-teacher."""

from __future__ import annotations

import pytest

from retort.errors import StoreError
from retort.evaluate.run import evaluate
from retort.teachers.local import LocalTeacher
from retort.train.loop import distill
from tests.cli.test_usage import retort
from tests.conftest import build_tiny_model, save_model
from tests.train.test_loop import settings


@pytest.fixture(scope="module")
def another_teacher_dir(tmp_path_factory, tiny_tokenizer):
    """Same tokenizer as the store's teacher, other weights: only the fingerprint tells."""
    folder = tmp_path_factory.mktemp("another-teacher")
    return save_model(build_tiny_model(tiny_tokenizer, seed=7), tiny_tokenizer, folder)


@pytest.mark.parametrize("objective", ["topk", "online"])
def test_distill_refuses_a_store_another_teacher_wrote(
    objective, another_teacher_dir, tiny_store, tmp_path
):
    config = settings(
        another_teacher_dir, tiny_store, tmp_path / "run", objective=objective, max_steps=1
    )
    with pytest.raises(StoreError, match=r"written by another teacher.*--allow-other-teacher"):
        distill(config)
    assert not (tmp_path / "run" / "final").exists()
    allowed = settings(
        another_teacher_dir,
        tiny_store,
        tmp_path / "allowed",
        objective=objective,
        max_steps=1,
        allow_other_teacher=True,
    )
    assert distill(allowed).steps == 1


def test_sft_and_the_stores_own_teacher_are_not_refused(
    tiny_model_dir, another_teacher_dir, tiny_store, tmp_path
):
    sft = settings(another_teacher_dir, tiny_store, tmp_path / "sft", objective="sft", max_steps=1)
    assert distill(sft).steps == 1  # the teacher's text is what sft learns, whoever judges
    own = settings(tiny_model_dir, tiny_store, tmp_path / "own", max_steps=1)
    assert distill(own).steps == 1


def test_eval_refuses_to_call_another_teachers_text_its_own(another_teacher_dir, tiny_store):
    teacher = LocalTeacher.load(str(another_teacher_dir))
    with pytest.raises(StoreError, match="written by another teacher"):
        evaluate(teacher, {}, tiny_store)
    report = evaluate(teacher, {}, tiny_store, allow_other_teacher=True, speed_tokens=2)
    assert report["rows"] == 16  # scored, as asked, though its teacher row is no reference


def test_the_cli_names_both_teachers_in_one_line(another_teacher_dir, tiny_store, tmp_path):
    result, _ = retort(
        "eval",
        "--teacher",
        another_teacher_dir,
        "--data",
        tiny_store,
        "--student",
        "prune:2",
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "written by another teacher" in line and str(another_teacher_dir) in line
