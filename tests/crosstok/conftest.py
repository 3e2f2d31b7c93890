"""Two real tokenizers that disagree: the embedded SmolLM2's (byte-level BPE, 49,152 tokens)
and Gemma 3's (SentencePiece-style with byte fallback, 262,144 tokens), from the packages the
Makefile installs."""

from __future__ import annotations

import importlib.util

import pytest

from retort.models.embedded import GEMMA3, SMOLLM2


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(SMOLLM2.tokenizer_dir())


@pytest.fixture(scope="session")
def gemma_tokenizer():
    if importlib.util.find_spec(GEMMA3.package) is None:
        pytest.skip(f"Gemma 3's tokenizer needs its package: {GEMMA3.pip_command}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(GEMMA3.tokenizer_dir())


# Real text with what tokenizers disagree on: accents, CJK, emoji, digits, runs of spaces,
# newlines and tabs, punctuation glued to words, a leading space.
TEXTS = [
    "The capital of France is Paris. It has 2,165,423 inhabitants (2019).",
    "Naïve café owners in Zürich charge 4.50 CHF — or €4.20 — for an espresso.",
    "東京は日本の首都です。🙂👍🏽 Emoji and CJK share a line.",
    "def f(x):\n\treturn x ** 2  # squares\n\n\nprint(f(12345))",
    " a leading space, then    four spaces and trailing ones   ",
    "In 1969, Apollo 11 landed; 3+4=7, 12*12=144, and 1/3≈0.333.",
]
