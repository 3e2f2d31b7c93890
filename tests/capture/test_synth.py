"""retort synth on a tiny teacher: near-duplicates never kept, output valid and resumable."""

from __future__ import annotations

from retort.capture.prompts import load_prompts
from retort.capture.synth import NgramIndex, SynthSettings, clean, synthesize
from retort.config import GenerateConfig
from tests.conftest import PROMPTS, write_jsonl


def test_clean_keeps_the_first_line_without_numbering_or_quotes():
    assert clean('\n 4. "Name three rivers in Asia."\nmore') == "Name three rivers in Asia."
    assert clean("Task: Write a poem about rain.") == "Write a poem about rain."
    assert clean("Your task: Sort these words.") == "Sort these words."
    assert clean("   \n") == ""


def test_near_duplicates_are_measured_by_word_ngram_overlap():
    index = NgramIndex()
    index.add("Write a short poem about the sea at night.")
    assert index.overlap("write a short poem about the sea at dawn") > 0.6
    assert index.overlap("List three uses of copper in electronics.") == 0.0


def test_synth_grows_a_file_of_distinct_prompts_and_continues_it(
    tiny_model_dir, tmp_path, monkeypatch
):
    import json

    from retort.capture import synth

    # A random tiny teacher writes word salad that only sometimes reads as a request; the
    # request filter has its own tests, so here every answer of enough words counts as one.
    monkeypatch.setattr(synth, "is_request", lambda task, min_words=3: len(task.split()) >= 2)

    seeds = write_jsonl(
        tmp_path / "seeds.jsonl",
        [json.loads(line) for line in PROMPTS.read_text().splitlines()[:8]],
    )
    template = GenerateConfig(
        teacher=str(tiny_model_dir),
        prompts=seeds,
        out=tmp_path / "x",
        temperature=1.0,
        max_new_tokens=16,
        batch_size=8,
    )
    settings = SynthSettings(
        count=6, max_rounds=2, requests_per_round=16, max_overlap=0.6, min_words=2
    )
    out = tmp_path / "synth.jsonl"
    first = synthesize(seeds, out, template, settings)
    assert 0 < len(first) <= 6
    records = load_prompts(out)
    assert [r.prompt for r in records] == first
    index = NgramIndex()
    for seed in load_prompts(seeds):
        index.add(seed.prompt)
    for task in first:  # each kept task was new when kept
        assert index.overlap(task) <= 0.6
        index.add(task)
    again = synthesize(seeds, out, template, SynthSettings(**{**settings.__dict__, "count": 9}))
    assert again[: len(first)] == first and len(again) <= 9
    assert not (tmp_path / ".synth.jsonl.rounds").exists()


def test_too_few_seeds_is_a_one_line_error_and_writes_nothing(tiny_model_dir, tmp_path):
    import pytest

    from retort.errors import InputError

    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": "Only one task."}])
    template = GenerateConfig(teacher=str(tiny_model_dir), prompts=seeds, out=tmp_path / "x")
    with pytest.raises(InputError, match=r"seeds\.jsonl: give at least 2 seed tasks"):
        synthesize(seeds, tmp_path / "out.jsonl", template, SynthSettings(count=3))
    assert not (tmp_path / "out.jsonl").exists()


def test_text_about_tasks_short_answers_and_non_requests_are_not_kept():
    from retort.capture.synth import is_request

    for meta in (
        "The task is to create a new task that differs from the previous ones.",
        "I am no longer needed.",
        "I'm an AI assistant named SmolLM, trained on a list of tasks.",
        "Here's a new task:",
        "One new task.",
        "The town was quiet after the festival ended.",
        "Write one new task that is different.",
    ):
        assert not is_request(meta), meta
    for task in (
        "Name three rivers in Asia.",
        "What is the chemical symbol for silver?",
        "For a ten-year-old, explain how the circulatory system works.",
        "Describe a quiet street after a festival.",
    ):
        assert is_request(task), task
