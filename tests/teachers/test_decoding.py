"""Local decoding is the model's own distribution: softmax(logits / T), with the user's top-p
only, whatever the model's ``generation_config`` ships (top-k, top-p, penalties, n-gram bans),
and greedy writes exactly the argmax of the logprobs it stores."""

from __future__ import annotations

import pytest
import torch

from retort.teachers.local import LocalTeacher
from retort.teachers.protocol import Sampling
from tests.conftest import build_tiny_model, train_tokenizer


def meddle(model) -> None:
    """What a hub ``generation_config.json`` may set (Qwen2.5-Instruct: top_k 20, top_p 0.8,
    repetition_penalty 1.05), pushed far enough to change every output."""
    config = model.generation_config
    config.top_k, config.top_p, config.min_p = 5, 0.5, 0.2
    config.repetition_penalty, config.no_repeat_ngram_size = 50.0, 2
    config.do_sample, config.temperature = True, 0.3


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer()


@pytest.fixture
def flat_teacher(tokenizer) -> LocalTeacher:
    """A tiny model whose next-token distribution is near-uniform over ~300 ids (no ties)."""
    model = build_tiny_model(tokenizer, layers=1, hidden=16)
    with torch.no_grad():
        model.lm_head.weight.mul_(0.001)
    return LocalTeacher(model, tokenizer)


def test_greedy_writes_the_argmax_of_the_stored_logprobs_whatever_the_generation_config(
    tokenizer,
):
    teacher = LocalTeacher(build_tiny_model(tokenizer, layers=2, hidden=32), tokenizer)
    meddle(teacher.model)
    out = teacher.generate([[5, 6, 7], [8, 9]], Sampling(max_new_tokens=12), top_k=1)
    for generation in out:
        assert generation.completion_ids == [row[0] for row in generation.topk_ids]
        assert generation.token_logprobs == [row[0] for row in generation.topk_logprobs]


def test_sampling_draws_from_the_full_softmax_not_a_truncation_of_it(flat_teacher):
    meddle(flat_teacher.model)
    vocab = flat_teacher.model.config.vocab_size
    out = flat_teacher.generate(
        [[5, 6]] * 1000, Sampling(max_new_tokens=1, temperature=1.0, seed=1), top_k=0
    )
    distinct = {g.completion_ids[0] for g in out}
    # 1000 draws from a uniform ~300-way distribution reach ~290 ids; top-k 50 reaches 50
    assert len(distinct) > 0.8 * vocab
    assert flat_teacher.model.generation_config.top_k == 5  # the model's own config is kept


def test_the_users_top_p_keeps_exactly_the_nucleus_of_the_teachers_distribution(tokenizer):
    teacher = LocalTeacher(build_tiny_model(tokenizer, layers=1, hidden=16, seed=3), tokenizer)
    meddle(teacher.model)
    prompt = [5, 6, 7]
    with torch.no_grad():
        logits = teacher.model(torch.tensor([prompt])).logits[0, -1].float()
    probs = logits.softmax(-1)
    ordered = probs.sort(descending=True)
    before = ordered.values.cumsum(0) - ordered.values  # mass ranked above each id
    nucleus = set(ordered.indices[before < 0.9].tolist())
    out = teacher.generate(
        [prompt] * 600, Sampling(max_new_tokens=1, temperature=1.0, top_p=0.9, seed=2), top_k=0
    )
    drawn = {g.completion_ids[0] for g in out}
    assert drawn <= nucleus
    assert len(drawn) > 0.5 * len(nucleus)  # not a top-k or min-p cut of the nucleus
    for g in out[:20]:  # stored logprobs are the teacher's own, untouched by top-p
        assert g.token_logprobs[0] == pytest.approx(float(probs.log()[g.completion_ids[0]]), 1e-4)


def test_a_seeded_sample_does_not_depend_on_the_other_rows_of_its_batch(flat_teacher):
    sampling = Sampling(max_new_tokens=8, temperature=1.0, seed=4)
    alone = flat_teacher.generate([[5, 6, 7]], sampling, top_k=0, seeds=[99])[0]
    batched = flat_teacher.generate(
        [[9, 9, 9, 9], [5, 6, 7], [10]], sampling, top_k=0, seeds=[1, 99, 2]
    )
    assert batched[1].completion_ids == alone.completion_ids
    again = flat_teacher.generate([[5, 6, 7]], sampling, top_k=0, seeds=[99])[0]
    assert again.completion_ids == alone.completion_ids


def test_generation_leaves_the_models_generation_config_as_it_was(flat_teacher):
    meddle(flat_teacher.model)
    before = flat_teacher.model.generation_config.to_dict()
    flat_teacher.generate([[5, 6]], Sampling(max_new_tokens=2, temperature=1.0), top_k=0)
    assert flat_teacher.model.generation_config.to_dict() == before


def test_the_fingerprint_names_every_decoding_knob_it_neutralises():
    settings = Sampling(max_new_tokens=8, temperature=0.7, top_p=0.9, seed=3).as_dict()
    assert settings["temperature"] == 0.7 and settings["top_p"] == 0.9 and settings["seed"] == 3
    knobs = settings["decoding"]
    assert knobs["top_k"] == 0
    assert knobs["min_p"] is None
    assert knobs["repetition_penalty"] == 1.0
    assert knobs["no_repeat_ngram_size"] == 0
    assert knobs["typical_p"] == 1.0
    assert knobs["model_generation_config"] == "ignored"


def test_row_sampler_draws_with_the_frequencies_of_softmax_over_temperature():
    from retort.teachers.decoding import RowSampler

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -3.0]]).repeat(4000, 1)  # (B, V)
    sampler = RowSampler(range(4000), temperature=0.7)
    out = sampler(torch.zeros(4000, 1, dtype=torch.long), logits)
    assert ((out == 0).sum(-1) == 1).all()  # exactly one finite id per row
    drawn = out.argmax(-1)
    frequencies = torch.bincount(drawn, minlength=5).float() / 4000
    assert frequencies.tolist() == pytest.approx((logits[0] / 0.7).softmax(-1).tolist(), abs=0.02)


def test_ids_tied_at_the_nucleus_boundary_are_all_kept():
    from retort.teachers.decoding import nucleus

    probs = torch.tensor([[0.4, 0.3, 0.3], [0.3, 0.3, 0.4]])
    assert nucleus(probs, 0.5).tolist() == probs.tolist()  # not one of two equal ids
    assert nucleus(torch.tensor([[0.5, 0.3, 0.2]]), 0.5).tolist() == [[0.5, 0.0, 0.0]]


def test_a_temperature_that_is_not_a_number_is_refused_up_front():
    from retort.errors import ConfigError
    from retort.teachers.decoding import RowSampler

    with pytest.raises(ConfigError, match="temperature nan"):
        RowSampler([0], temperature=float("nan"))
