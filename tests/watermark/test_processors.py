"""The logits processors: KGW biases exactly the green ids and composes with the sampler;
Gumbel-max samples from the model's distribution; a row's output does not depend on its batch
or its left padding; watermarked generations detect and unwatermarked ones do not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from retort.errors import ConfigError
from retort.teachers.local import LocalTeacher
from retort.teachers.protocol import Sampling
from retort.watermark.detect import detect, detect_pooled
from retort.watermark.processors import GumbelProcessor, KGWProcessor, watermark_processors
from tests.watermark.conftest import make_key

PROMPTS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]


@pytest.fixture(scope="module")
def teacher(tiny_model_dir) -> LocalTeacher:
    return LocalTeacher.load(str(tiny_model_dir))


def test_kgw_adds_delta_to_the_green_ids_only_and_leaves_the_scores_alone():
    key = make_key(delta=3.0)
    input_ids = torch.tensor([[1, 2, 3], [0, 4, 5]])
    scores = torch.randn(2, 1000)  # more ids than any tokenizer of these tests: V is the truth
    before = scores.clone()
    out = KGWProcessor(key)(input_ids, scores)
    assert torch.equal(scores, before)  # transformers keeps this tensor as the raw logits
    for row, context in enumerate([(3,), (5,)]):
        green = torch.from_numpy(key.green_mask(context, 1000))
        assert torch.allclose(out[row][green], scores[row][green] + 3.0)
        assert torch.equal(out[row][~green], scores[row][~green])


def test_selfhash_boosts_green_candidates_among_the_top_ids_only():
    key = make_key(seeding="selfhash", delta=2.0)
    scores = torch.linspace(5, -5, 500)[None]  # id 0 most likely
    out = KGWProcessor(key)(torch.tensor([[7, 8, 9]]), scores)
    boosted = (out - scores)[0].nonzero().flatten().tolist()
    assert boosted and max(boosted) < 40
    u = key.prfs[0].uniforms((7, 8, 9), np.arange(40))
    assert boosted == [t for t in range(40) if u[t] < 0.25]


def test_gumbel_picks_tokens_with_the_models_probabilities():
    probs = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05])
    rows = 6000
    contexts = torch.from_numpy(np.random.default_rng(0).integers(0, 50_000, (rows, 4)))
    for temperature, top_p, expected in [
        (1.0, 1.0, probs),
        (2.0, 1.0, probs.sqrt() / probs.sqrt().sum()),
        (1.0, 0.7, torch.tensor([4 / 7, 3 / 7, 0, 0, 0])),  # the nucleus: ids 0 and 1
    ]:
        processor = GumbelProcessor(make_key("gumbel"), temperature, top_p)
        out = processor(contexts, probs.log().expand(rows, 5).clone())
        assert ((out == 0).sum(-1) == 1).all() and torch.isinf(out).sum() == rows * 4
        counts = np.bincount(out.argmax(-1).numpy(), minlength=5)
        expected = expected.double().numpy()
        kept = expected > 0
        assert counts[~kept].sum() == 0
        chi2 = scipy_stats.chisquare(counts[kept], rows * expected[kept] / expected.sum())
        assert chi2.pvalue > 1e-3, (temperature, top_p, counts)


def test_gumbel_refuses_temperature_zero():
    with pytest.raises(ConfigError, match="needs temperature > 0"):
        watermark_processors(make_key("gumbel"), 0.0, 1.0, [0])


@pytest.mark.parametrize(
    ("key", "temperature", "top_p"),
    [
        (make_key(delta=4.0), 1.0, 1.0),
        (make_key(delta=4.0), 1.0, 0.9),
        (make_key(seeding="selfhash"), 0.0, 1.0),
        (make_key("gumbel"), 1.0, 0.9),
        (make_key("gumbel", dual=True), 0.8, 1.0),
    ],
    ids=["kgw", "kgw-top-p", "selfhash-greedy", "gumbel-top-p", "gumbel-dual"],
)
def test_a_rows_output_is_the_same_alone_and_in_a_left_padded_batch(
    teacher, key, temperature, top_p
):
    marked = teacher.watermarked(key)
    sampling = Sampling(max_new_tokens=10, temperature=temperature, top_p=top_p, seed=3)
    seeds = [11, 22, 33]
    together = marked.generate(PROMPTS, sampling, top_k=2, seeds=seeds)
    for prompt, seed, batched in zip(PROMPTS, seeds, together, strict=True):
        alone = marked.generate([prompt], sampling, top_k=2, seeds=[seed])[0]
        assert alone.completion_ids == batched.completion_ids
        assert alone.topk_ids == batched.topk_ids


def test_stored_logprobs_are_the_models_own_not_the_watermarked_ones(teacher):
    sampling = Sampling(max_new_tokens=6)
    plain = teacher.generate(PROMPTS, sampling, top_k=0)
    marked = teacher.watermarked(make_key(delta=8.0)).generate(PROMPTS, sampling, top_k=0)
    assert [g.completion_ids for g in plain] != [g.completion_ids for g in marked]
    rescored = teacher.token_logprobs(
        [p + g.completion_ids for p, g in zip(PROMPTS, marked, strict=True)]
    )
    for prompt, generation, scores in zip(PROMPTS, marked, rescored, strict=True):
        own = scores[len(prompt) - 1 :]
        assert generation.token_logprobs == pytest.approx(own, abs=1e-4)


@pytest.mark.parametrize("key", [make_key(delta=4.0), make_key("gumbel")], ids=["kgw", "gumbel"])
def test_watermarked_generations_detect_and_plain_ones_do_not(teacher, key):
    prompts = [[5 + i, 6 + i, 7 + i, 8 + i] for i in range(8)]
    sampling = Sampling(max_new_tokens=30, temperature=1.0, seed=0)
    marked = teacher.watermarked(key).generate(prompts, sampling, top_k=0)
    plain = teacher.generate(prompts, sampling, top_k=0)
    results = [
        detect(g.completion_ids, key, context=p) for p, g in zip(prompts, marked, strict=True)
    ]
    # A text can end early (EOS), and Gumbel text that revisits a 4-gram loops (the choice is a
    # function of context, and a loop's pairs count once): the evidence is pooled to be sure.
    assert detect_pooled([g.completion_ids for g in marked], key, contexts=prompts).p_value < 1e-12
    assert np.median([r.p_value for r in results]) < 1e-4
    if key.scheme == "kgw":
        green = [detect(g.completion_ids, key).score for g in marked]
        scored = [detect(g.completion_ids, key).scored_tokens for g in marked]
        assert sum(green) / sum(scored) > 0.8  # mostly green at delta 4
    for prompt, generation in zip(prompts, plain, strict=True):
        assert detect(generation.completion_ids, key, context=prompt).p_value > 1e-4


def test_single_gumbel_key_repeats_itself_a_dual_key_does_not(teacher):
    prompt, sampling = [[5, 6, 7, 8]], Sampling(max_new_tokens=12, temperature=1.0)
    single = teacher.watermarked(make_key("gumbel"))
    dual = teacher.watermarked(make_key("gumbel", dual=True))

    def texts(teacher):
        return {
            tuple(teacher.generate(prompt, sampling, 0, seeds=[s])[0].completion_ids)
            for s in range(6)
        }

    assert len(texts(single)) == 1  # a single key is a function of context: seeds change nothing
    assert len(texts(dual)) > 1
