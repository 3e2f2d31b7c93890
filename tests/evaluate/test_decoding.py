"""Evaluation decodes greedily from the model itself: a ``generation_config`` that ships
penalties, beams or sampling changes neither the answers graded nor the work timed."""

from __future__ import annotations

import pytest
from transformers import GenerationConfig

from retort.capture.store import Store
from retort.evaluate.metrics import answer_metrics
from retort.evaluate.speed import tokens_per_second
from retort.teachers.local import LocalTeacher


def meddle(model) -> None:
    config = model.generation_config
    config.repetition_penalty, config.no_repeat_ngram_size = 50.0, 2
    config.do_sample, config.top_k, config.num_beams = True, 5, 3


def effective_configs(model, monkeypatch) -> list[GenerationConfig]:
    """Records the config each ``generate`` call really ran with, after transformers' merge."""
    seen: list[GenerationConfig] = []
    prepare = model._prepare_generation_config

    def spy(*args, **kwargs):
        config, model_kwargs = prepare(*args, **kwargs)
        seen.append(config)
        return config, model_kwargs

    monkeypatch.setattr(model, "_prepare_generation_config", spy)
    return seen


def test_answer_metrics_grade_the_greedy_answers_whatever_the_generation_config(
    tiny_model_dir, tiny_store
):
    teacher = LocalTeacher.load(str(tiny_model_dir))
    rows = Store.open(tiny_store).read_table().to_pylist()[:6]
    clean = answer_metrics(teacher.model, teacher, rows, max_new_tokens=10, batch_size=3)
    meddle(teacher.model)
    meddled = answer_metrics(teacher.model, teacher, rows, max_new_tokens=10, batch_size=3)
    assert meddled["teacher_nll_of_answers"] == pytest.approx(clean["teacher_nll_of_answers"])
    assert meddled["answer_length"] == clean["answer_length"]


def test_speed_times_plain_greedy_decoding_whatever_the_generation_config(
    tiny_model_dir, tiny_tokenizer, monkeypatch
):
    teacher = LocalTeacher.load(str(tiny_model_dir))
    meddle(teacher.model)
    seen = effective_configs(teacher.model, monkeypatch)
    prompts = [tiny_tokenizer("Name a colour.")["input_ids"]]
    assert tokens_per_second(teacher.model, prompts, 2, 4, tiny_tokenizer.pad_token_id) > 0
    assert len(seen) == 2  # warm-up and the timed call
    for config in seen:
        assert (config.do_sample, config.num_beams) == (False, 1)
        assert (config.repetition_penalty, config.no_repeat_ngram_size) == (1.0, 0)
        assert config.min_new_tokens == config.max_new_tokens  # equal work for every model
