"""The filters and de-duplication on hand-made cases with known counts, and the scorer against
the detector it must agree with."""

from __future__ import annotations

import numpy as np
import pytest

from retort.audit.pairs import PairCollector, frequent_kgrams, kgrams
from retort.audit.result import verdict
from retort.audit.scoring import score_key
from retort.watermark.detect import detect_pooled
from tests.watermark.conftest import make_key


def test_each_filter_and_dedup_remove_known_positions():
    # h = 1: a pair is (previous id, predicted id), its k-gram the bigram of the two.
    text_a, text_b = [1, 2, 3, 2, 3], [2, 5, 6, 5]
    corpus = [text_a, text_b]
    frequent = frequent_kgrams(corpus, 2, top=1)
    assert frequent == {(2, 3)}  # twice in text a, every other bigram once
    collector = PairCollector(1, listed={(3, 7)}, frequent=frequent)
    # predictions for positions 1..len(x), given x[:p]
    collector.add_prediction(text_a, [2, 9, 2, 9, 7])
    #   p=1 (1,2) in text a: input · p=2 (2,9) kept · p=3 (3,2) in text a: input
    #   p=4 (2,9) again: repeat · p=5 (3,7) listed
    collector.add_prediction(text_b, [3, 5, 5, 5])
    #   p=1 (2,3) not in text b, frequent · p=2 (5,5) kept · p=3 (6,5) in text b: input
    #   p=4 (5,5) again: repeat
    found = collector.result
    assert found.texts == 2 and found.positions == 9
    assert found.excluded == {"input": 3, "listed": 1, "frequent": 1}
    assert found.repeats == 2
    assert list(found.pairs) == [((2,), 9), ((5,), 5)]
    key = make_key("kgw", seed=1)
    result = verdict("reading", "hand", found, [key])
    assert result.scored_tokens == 2 and result.positions == 9 and result.repeats == 2


def test_the_input_filter_stops_a_model_that_echoes_watermarked_text():
    """A suspect that predicts each next token of a watermarked text correctly reproduces the
    watermark without having learned it: the text's own k-grams must not count."""
    key = make_key("kgw", seed=2)
    vocab, rng = 300, np.random.default_rng(0)
    text = [int(rng.integers(vocab))]
    for _ in range(400):  # KGW-style: a green id 9 times in 10
        green = np.flatnonzero(key.green_mask(text[-1:], vocab))
        pool = green if rng.random() < 0.9 else np.arange(vocab)
        text.append(int(rng.choice(pool)))
    echo = [*text[1:], text[0]]  # the true next token everywhere (and one after the text)

    filtered = PairCollector(1)
    filtered.add_prediction(text, echo)
    assert filtered.result.excluded["input"] == len(text) - 1
    assert score_key(filtered.result, key).scored_tokens <= 1

    unfiltered = PairCollector(1)  # the same positions without the input filter
    unfiltered.add(text, ((p, echo[p - 1]) for p in range(1, len(text) + 1)), own=set())
    assert score_key(unfiltered.result, key).p_value < 1e-30


@pytest.mark.parametrize(
    "settings",
    [
        {"scheme": "kgw"},
        {"scheme": "kgw", "seeding": "selfhash"},
        {"scheme": "gumbel"},
        {"scheme": "gumbel", "dual": True},
    ],
)
def test_pooled_samples_score_as_the_detector_scores_them(settings):
    key = make_key(seed=3, **settings)
    rng = np.random.default_rng(1)
    # prompts use ids 0..49, completions 50..99: no completion k-gram is a prompt's
    prompts = [rng.integers(0, 50, 6).tolist() for _ in range(5)]
    completions = [rng.integers(50, 100, 40).tolist() for _ in range(5)]
    completions.append(completions[0])  # a repeated completion counts once
    prompts.append(prompts[0])
    collector = PairCollector(key.history)
    for prompt, completion in zip(prompts, completions, strict=True):
        collector.add_sample(prompt, completion)
    ours = score_key(collector.result, key)
    theirs = detect_pooled(completions, key, contexts=prompts)
    assert ours.scored_tokens == theirs.scored_tokens
    assert ours.score == pytest.approx(theirs.score)
    assert ours.p_value == pytest.approx(theirs.p_value)
    assert collector.result.repeats >= 40


def test_kgrams():
    assert kgrams([1, 2, 3, 1, 2], 2) == {(1, 2), (2, 3), (3, 1)}
    assert kgrams([1], 2) == set()
    assert frequent_kgrams([[1, 1, 1], [2, 2]], 2, top=0) == set()
