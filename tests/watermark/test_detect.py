"""The detector on hand-made token sequences: known green counts give the exact binomial
tail, each (context, token) pair counts once, contexts outside the text are not scored, and
null text gives p-values spread over (0, 1]."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from retort.watermark.detect import detect, detect_many, detect_pooled, score_pairs
from tests.watermark.conftest import make_key

VOCAB = 300


def written(key, pattern, start=(5,), rng=None):
    """A sequence after ``start`` whose token i is green (True) or red (False) per
    ``pattern``, with no (context, token) pair repeated."""
    rng = rng or np.random.default_rng(0)
    ids, used = list(start), set()
    for want_green in pattern:
        context = tuple(ids[-key.history :])
        green = key.green_mask(context, VOCAB)
        choices = [int(t) for t in rng.permutation(VOCAB) if green[t] == want_green]
        token = next(t for t in choices if (key.prfs[0].seed(context, t), t) not in used)
        used.add((key.prfs[0].seed(context, token), token))
        ids.append(token)
    return ids


@pytest.mark.parametrize("seeding", ["lefthash", "selfhash"])
def test_known_green_count_gives_the_exact_binomial_tail(seeding):
    key = make_key(seeding=seeding)
    pattern = [True] * 14 + [False] * 16
    ids = written(key, pattern, start=(5, 6, 7))
    result = detect(ids[3:], key, context=ids[:3])
    assert result.scored_tokens == 30 and result.score == 14
    assert result.p_value == scipy_stats.binom.sf(13, 30, 0.25)
    assert result.z_score == pytest.approx((14 - 7.5) / np.sqrt(30 * 0.25 * 0.75))


def test_first_history_tokens_are_skipped_without_context():
    key = make_key(context_width=3)
    ids = written(key, [True] * 20, start=(1, 2, 3))
    assert detect(ids, key).scored_tokens == len(ids) - 3
    assert detect(ids[3:], key).scored_tokens == 17  # the first three have no context here
    assert detect(ids[3:], key, context=ids[:3]).scored_tokens == 20


def test_each_context_token_pair_counts_once():
    key = make_key()
    once = written(key, [True] * 10)
    result = detect(once * 5, key)  # the text, five times over
    # the pairs of one copy, and the one pair that joins two copies
    assert result.scored_tokens == len(once) - 1 + 1
    assert result.p_value >= detect(once, key).p_value / 1e3  # repetition buys no evidence
    assert len(score_pairs(once * 5, key)) == 5 * len(once) - 1


def test_selfhash_counts_windows_sharing_a_seed_once():
    key = make_key(seeding="selfhash")
    prf, rng = key.prfs[0], np.random.default_rng(4)
    # two different windows before the same token whose minimum pair is the same one
    while True:
        a, c, *others = (int(t) for t in rng.choice(VOCAB, 6, replace=False))
        first, second = (a, others[0], others[1]), (a, others[2], others[3])
        if prf.seed(first, c) == prf.seed(second, c):
            break
    text = [*first, c, *second, c]
    pairs = score_pairs(text, key)
    assert [p.position for p in pairs] == [3, 4, 5, 6, 7]
    assert pairs[0].pair == pairs[4].pair  # u is the same: scoring it twice would double it
    assert detect(text, key).scored_tokens == 4


def test_gumbel_scores_minus_log_one_minus_u():
    key = make_key("gumbel", context_width=2)
    ids = [4, 8, 15, 16, 23, 42]
    result = detect(ids, key)
    want = sum(-np.log1p(-key.prfs[0].uniform(ids[i - 2 : i], ids[i])) for i in range(2, 6))
    assert result.scored_tokens == 4 and result.score == pytest.approx(want)
    assert result.p_value == pytest.approx(scipy_stats.gamma.sf(want, 4))


def test_dual_key_scores_the_max_of_both_squared():
    key = make_key("gumbel", dual=True, context_width=1)
    ids = [3, 9, 27, 81]
    u = [max(prf.uniform((ids[i - 1],), ids[i]) for prf in key.prfs) for i in range(1, 4)]
    assert detect(ids, key).score == pytest.approx(sum(-np.log1p(-(x * x)) for x in u))


def test_gumbel_text_written_with_either_secret_of_a_dual_key_detects():
    key = make_key("gumbel", dual=True, context_width=1)
    rng = np.random.default_rng(1)
    ids = [7]
    for _ in range(40):  # the best of 30 random candidates under the secret of this step
        which = int(rng.integers(2))
        candidates = rng.choice(VOCAB, 30, replace=False)
        u = key.uniforms(ids, VOCAB, which=which)[candidates]
        ids.append(int(candidates[np.argmax(u)]))
    assert detect(ids, key).p_value < 1e-6


def test_window_finds_a_watermarked_span_in_longer_text():
    key = make_key()
    rng = np.random.default_rng(2)
    human = [int(t) for t in rng.integers(0, VOCAB, 400)]
    marked = written(key, [True] * 40, start=(human[199],), rng=rng)[1:]
    text = human[:200] + marked + human[200:]
    whole = detect(text, key)
    found = detect(text, key, window=40)
    assert found.windows == len(text) - 1 - 40 + 1
    assert found.p_value < 1e-10 < whole.p_value
    start, end = found.window
    assert abs(start - 200) <= 3 and abs(end - 240) <= 3
    # Bonferroni: the best window's own p times the number of windows
    span = detect(text[start:end], key, context=text[start - 1 : start])
    assert found.p_value == pytest.approx(min(1, span.p_value * found.windows))


def test_window_longer_than_the_text_is_the_plain_test():
    key = make_key()
    ids = written(key, [True] * 10)
    assert detect(ids, key, window=500).p_value == detect(ids, key).p_value


def test_several_keys_bonferroni_and_name_the_key():
    right, wrong = make_key(name="right.json"), make_key(seed=1, name="wrong.json")
    ids = written(right, [True] * 20)
    result = detect_many(ids, [wrong, right])
    assert result.key == "right.json" and result.keys == 2
    assert result.p_value == pytest.approx(2 * detect(ids, right).p_value)


def test_pooled_texts_count_shared_pairs_once():
    key = make_key()
    a = written(key, [True] * 10)
    pooled = detect_pooled([a, a, a[:5]], key)
    assert pooled.scored_tokens == detect(a, key).scored_tokens


@pytest.mark.parametrize("scheme", ["kgw", "gumbel"])
def test_unwatermarked_text_gives_p_values_spread_over_zero_one(scheme):
    key = make_key(scheme)
    rng = np.random.default_rng(3)
    p = np.array([detect(list(rng.integers(0, VOCAB, 80)), key).p_value for _ in range(200)])
    assert (p < 0.05).mean() < 0.12 and (p < 0.01).mean() < 0.05
    assert 0.35 < p.mean() < 0.7
    if scheme == "gumbel":  # continuous: the p-values are Uniform(0, 1)
        assert scipy_stats.kstest(p, "uniform").pvalue > 1e-3


def test_empty_and_short_texts_have_no_evidence():
    key = make_key(context_width=4)
    for ids in ([], [1, 2, 3]):
        result = detect(ids, key)
        assert (result.scored_tokens, result.p_value) == (0, 1.0)


def test_the_detector_needs_neither_torch_nor_transformers():
    import subprocess
    import sys

    script = (
        "import sys; import retort.watermark.detect, retort.watermark.keys; "
        "print(any(m in sys.modules for m in ('torch', 'transformers')))"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"
