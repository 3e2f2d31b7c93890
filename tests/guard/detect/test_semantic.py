"""The embedding families on constructed embeddings with known answers: topical spread,
PRADA's distance-distribution test, and the benign-calibrated MMD window test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from retort.errors import ConfigError, InputError
from retort.guard.detect.features import all_features
from retort.guard.detect.features.prada import (
    Prada,
    min_distances,
    prada_delta,
    prada_statistic,
)
from retort.guard.detect.features.topics import Topics
from retort.guard.detect.features.window import Reference, WindowTest, mmd_window_test

D = 48


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# --- Topics -----------------------------------------------------------------------------


def test_identical_prompts_have_no_diversity_full_focus_and_no_coverage():
    rows = np.tile(unit(np.ones((1, D))), (20, 1))
    values = Topics().values_from(rows)
    assert values["topics.diversity"] == pytest.approx(0.0, abs=1e-6)
    assert values["topics.focus"] == pytest.approx(1.0)
    assert values["topics.coverage"] == 0.0


def test_orthonormal_prompts_are_fully_diverse():
    values = Topics().values_from(np.eye(16, dtype=np.float32))
    assert values["topics.diversity"] == pytest.approx(1.0)
    assert values["topics.focus"] == pytest.approx(1 / 4)  # ‖mean‖ = √16 / 16


def test_coverage_counts_the_axes_the_prompts_lie_on():
    # ±e₀..±e₃, 8 of each: variance on exactly 4 of D axes
    axes = np.concatenate([np.eye(D)[:4], -np.eye(D)[:4]])
    values = Topics().values_from(np.tile(axes, (8, 1)).astype(np.float32))
    assert values["topics.coverage"] * D == pytest.approx(4.0, rel=0.1)


def test_coverage_does_not_grow_with_the_window_on_one_distribution():
    rng = np.random.default_rng(0)
    # a distribution with ~8 effective directions: 8 strong axes, weak noise elsewhere
    scales = np.r_[np.ones(8), np.full(D - 8, 0.05)]
    big = unit(rng.normal(size=(256, D)) * scales)
    small, large = (Topics().values_from(big[:n])["topics.coverage"] * D for n in (32, 256))
    assert 6 < small < 11 and 6 < large < 11


def test_topics_are_neutral_below_16_prompts_and_ignore_empty_rows():
    neutral = {f.name: f.neutral for f in Topics.features}
    assert Topics().values_from(np.eye(15, dtype=np.float32)) == neutral
    assert Topics().values_from(np.zeros((0, 0), dtype=np.float32)) == neutral
    padded = np.concatenate([np.eye(16), np.zeros((5, 16))]).astype(np.float32)
    assert Topics().values_from(padded)["topics.diversity"] == pytest.approx(1.0)


# --- PRADA ------------------------------------------------------------------------------


def test_min_distances_are_to_the_nearest_earlier_query():
    line = np.array([[0.0], [3.0], [1.0], [2.5]])
    np.testing.assert_allclose(min_distances(line), [3.0, 1.0, 0.5])


def grid_attacker(rng: np.random.Generator) -> np.ndarray:
    """A 12 × 12 grid over a 2-D patch of the sphere, visited in random order."""
    u, v = np.meshgrid(np.linspace(-0.3, 0.3, 12), np.linspace(-0.3, 0.3, 12))
    points = np.zeros((144, D))
    points[:, 0], points[:, 1], points[:, 2] = 1.0, u.ravel(), v.ravel()
    return unit(points[rng.permutation(144)])


def test_prada_separates_a_grid_sweep_from_natural_random_queries():
    rng = np.random.default_rng(0)
    attacker = prada_statistic(grid_attacker(rng))
    natural = [prada_statistic(unit(rng.normal(size=(144, D)))) for _ in range(5)]
    assert attacker < 0.6
    assert np.mean(natural) > 0.95 and min(natural) > 0.85
    assert Prada().values_from(grid_attacker(rng))["prada.nonnormality"] > 0.4


def test_prada_reads_exact_repeats_as_fully_unnatural():
    repeats = np.tile(np.eye(D, dtype=np.float32)[:1], (30, 1))
    assert prada_statistic(repeats) == 0.0
    assert Prada().values_from(repeats)["prada.nonnormality"] == 1.0


def test_prada_is_neutral_below_20_queries():
    rng = np.random.default_rng(1)
    assert Prada().values_from(grid_attacker(rng)[:19]) == {"prada.nonnormality": 0.05}
    assert Prada().values_from(np.zeros((0, 0))) == {"prada.nonnormality": 0.05}


def test_prada_delta_flags_at_most_the_chosen_share_of_benign_clients():
    benign = np.linspace(0.90, 0.999, 200)
    delta = prada_delta(benign, fpr=0.01)
    assert (benign < delta).sum() <= 2 and (benign < delta).sum() >= 1


# --- the MMD window test ----------------------------------------------------------------

CENTRES = unit(np.random.default_rng(42).normal(size=(24, D)))


def benign_key(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """A benign-looking key: prompts around 3 of 24 shared topics, in arrival order."""
    topics = rng.choice(len(CENTRES), size=3, replace=False)
    rows = 0.6 * CENTRES[rng.choice(topics, size=n)] + 0.8 * rng.normal(size=(n, D)) / np.sqrt(D)
    rows[:, 0] += shift
    return unit(rows)


@pytest.fixture(scope="module")
def reference() -> Reference:
    rng = np.random.default_rng(7)
    # the null is only as good as the number of distinct held-out keys behind it (~150 here)
    keys = {f"key-{i:03d}": benign_key(rng, int(rng.integers(40, 120))) for i in range(300)}
    return Reference.build(keys, window=64, calibration_windows=200, seed=0)


def test_reference_keeps_a_bounded_pool_and_three_window_sizes(reference):
    assert reference.pool.shape[1] == D and len(reference.pool) <= 2000
    assert reference.sizes.tolist() == [32, 48, 64]
    assert reference.nulls.shape == (3, 200)


def test_benign_windows_get_roughly_uniform_p_values(reference):
    rng = np.random.default_rng(8)
    p = np.array([reference.p_value(benign_key(rng, 64)) for _ in range(200)])
    assert (p < 0.01).mean() <= 0.02
    assert (p < 0.05).mean() <= 0.10
    assert stats.kstest(p, "uniform").pvalue > 0.001


def test_shifted_windows_get_the_smallest_p_value(reference):
    rng = np.random.default_rng(9)
    p = [reference.p_value(benign_key(rng, 64, shift=0.4)) for _ in range(20)]
    assert max(p) == pytest.approx(1 / 201)
    result = mmd_window_test(reference, benign_key(rng, 100, shift=0.4), alpha=0.01)
    assert result.flagged and result.size == 64


def test_mmd_statistic_known_answer():
    # pool at e₀, window at e₁: ‖e₀ − e₁‖² = 2, σ = 1, so k = e⁻¹ across and 1 within
    eye = np.eye(4, dtype=np.float32)
    ref = Reference(np.tile(eye[:1], (10, 1)), 1.0, np.array([4]), np.zeros((1, 10)))
    assert ref.statistic(np.tile(eye[1:2], (4, 1))) == pytest.approx(2 - 2 * np.exp(-1))
    assert ref.statistic(np.tile(eye[:1], (4, 1))) == pytest.approx(0.0, abs=1e-6)


def test_window_test_uses_the_largest_calibrated_size_that_fits(reference):
    rng = np.random.default_rng(10)
    assert reference.test(benign_key(rng, 40)).size == 32
    assert reference.test(benign_key(rng, 50)).size == 48
    assert reference.test(benign_key(rng, 250)).size == 64


def test_window_feature_is_neutral_below_half_a_window(reference):
    rng = np.random.default_rng(11)
    family = WindowTest(reference)
    assert family.values_from(benign_key(rng, 31, shift=0.4)) == {"window.mmd_log10p": 0.0}
    assert family.values_from(np.zeros((0, 0))) == {"window.mmd_log10p": 0.0}
    shifted = family.values_from(benign_key(rng, 64, shift=0.4))["window.mmd_log10p"]
    assert shifted == pytest.approx(np.log10(201))


def test_window_features_are_readable_from_the_class():
    assert [f.name for f in WindowTest.features] == ["window.mmd_log10p"]
    assert "window.mmd_log10p" in all_features()


def test_window_test_refuses_embeddings_of_another_dimension(reference):
    with pytest.raises(ConfigError, match="rebuild the baseline"):
        reference.test(np.ones((64, D + 1), dtype=np.float32))


def test_reference_is_deterministic_per_seed():
    rng = np.random.default_rng(12)
    keys = {f"k{i}": benign_key(rng, 80) for i in range(10)}
    a = Reference.build(keys, window=16, calibration_windows=20, seed=3)
    b = Reference.build(dict(reversed(keys.items())), window=16, calibration_windows=20, seed=3)
    np.testing.assert_array_equal(a.pool, b.pool)
    np.testing.assert_array_equal(a.nulls, b.nulls)


def test_reference_from_one_key_splits_it_in_time():
    rng = np.random.default_rng(13)
    ref = Reference.build({"only": benign_key(rng, 200)}, window=32, calibration_windows=20)
    assert len(ref.pool) == 100 and ref.sizes.tolist() == [16, 24, 32]


def test_reference_refuses_too_little_traffic():
    with pytest.raises(InputError, match="no embedded prompts"):
        Reference.build({"a": np.zeros((0, D))})
    with pytest.raises(InputError, match="held-out benign keys hold under 32"):
        Reference.build({"a": np.eye(D)[:10], "b": np.eye(D)[10:20]}, window=64)


def test_reference_round_trips_through_npz(reference, tmp_path):
    path = tmp_path / "benign.npz"
    reference.save(path)
    loaded = Reference.load(path)
    np.testing.assert_array_equal(loaded.pool, reference.pool)
    np.testing.assert_array_equal(loaded.nulls, reference.nulls)
    assert loaded.bandwidth == reference.bandwidth and loaded.embedder == reference.embedder
    window = benign_key(np.random.default_rng(14), 64)
    assert loaded.p_value(window) == reference.p_value(window)


def test_loading_something_else_is_an_input_error(tmp_path):
    bogus = tmp_path / "bogus.npz"
    bogus.write_text("not a reference")
    with pytest.raises(InputError, match="not a window-test reference"):
        Reference.load(bogus)
    with pytest.raises(InputError):
        Reference.load(tmp_path / "missing.npz")


def test_reference_calibrates_on_mixed_keys_when_none_is_long_enough(caplog):
    rng = np.random.default_rng(15)
    keys = {f"k{i}": benign_key(rng, 20) for i in range(12)}
    ref = Reference.build(keys, window=32, calibration_windows=20)
    assert ref.sizes.tolist() == [16, 24, 32]
    assert "calibrating on keys mixed together" in caplog.text


def test_reference_ignores_empty_rows():
    rng = np.random.default_rng(16)
    keys = {f"k{i}": np.concatenate([benign_key(rng, 40), np.zeros((5, D))]) for i in range(4)}
    ref = Reference.build(keys, window=32, calibration_windows=20)
    assert np.linalg.norm(ref.pool, axis=1).min() > 0.99
