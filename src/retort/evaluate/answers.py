"""Grade generated answers against a record's ``reference``.

``exact``: the normalized answer equals the normalized reference. ``contains``: the reference
appears in the answer as whole words. Normalizing lowercases, strips accents and punctuation,
and a number matches its word (``7`` ~ ``seven``).
"""

from __future__ import annotations

import re
import unicodedata

_NUMBER_WORDS = [
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    *("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen"),
    *("eighteen", "nineteen", "twenty"),
]


def normalize(text: str) -> str:
    """Lowercase, accents stripped, punctuation to spaces, whitespace collapsed."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 → 1000
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def _variants(reference: str) -> list[str]:
    ref = normalize(reference)
    variants = [ref]
    if ref.isdigit() and int(ref) < len(_NUMBER_WORDS):
        variants.append(_NUMBER_WORDS[int(ref)])
    if ref in _NUMBER_WORDS:
        variants.append(str(_NUMBER_WORDS.index(ref)))
    return variants


def exact_match(answer: str, reference: str) -> bool:
    """The whole (normalized) answer is the reference."""
    return normalize(answer) in _variants(reference)


def contains_match(answer: str, reference: str) -> bool:
    """The reference appears in the answer as whole words."""
    padded = f" {normalize(answer)} "
    return any(f" {v} " in padded for v in _variants(reference) if v)
