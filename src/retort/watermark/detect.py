"""The detector: does a token sequence carry a key's watermark? An exact p-value says.

Each token whose context lies inside the text (the first ``key.history`` tokens have none,
unless ``context`` ids before the text are given) is one (context, token) pair. A pair that
occurs again is scored once: repeated text repeats u, and counting it twice would break the
independence the null distribution rests on (that is what keeps the p-value valid on
repetitive text). Pairs are identified by the seed u is drawn from and the token, so selfhash
windows that share their minimum pair count once too.

Per pair:

- KGW: green (u < gamma) or not; the score is the green count g of n pairs, and
  p = P(Bin(n, gamma) >= g) exactly (``stats.binomial_p_value``); z is reported alongside.
- Gumbel: -log(1 - u), Aaronson's score; the sum s of n pairs is Gamma(n, 1) under the null,
  p = P(Gamma(n, 1) >= s). A dual-key Gumbel text used one of two secrets at each step, and
  the detector does not know which: it scores v = max(u_a, u_b) ** 2, which is exactly
  Uniform[0, 1) under the null (the max of two independent uniforms has CDF x ** 2), and is at
  least u ** 2 of the secret that was used, so the test stays exact and loses little power.

Windowed detection (``window=N``) finds a watermarked span inside longer unwatermarked text:
the minimum p over every run of N consecutive scored tokens (pairs de-duplicated within each
run), times the number of runs (Bonferroni). The runs overlap, so the correction is
conservative: the true false-positive rate is below the nominal one. Several keys: the
smallest p times the number of keys (Bonferroni again).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy import stats as scipy_stats

from retort.errors import ConfigError
from retort.watermark import stats
from retort.watermark.keys import Key


class ScoredPair(NamedTuple):
    """One scorable token: where it is, which (seed, token) pair it is, and its value."""

    position: int  # index in the scored token ids
    pair: Hashable  # identity of the pair: (seed, token)
    value: float  # kgw: 1.0 green, 0.0 not; gumbel: -log(1 - u)


@dataclass(frozen=True)
class Detection:
    """The verdict on one text (or a pool of texts).

    Attributes:
        scored_tokens: distinct (context, token) pairs scored (n).
        score: kgw: green pairs (g); gumbel: the sum of -log(1 - u).
        p_value: exact tail probability of ``score`` under the null, after the Bonferroni
            corrections for windows and keys.
        z_score: kgw: (g - gamma n) / sqrt(n gamma (1 - gamma)); gumbel: (s - n) / sqrt(n).
        key: name of the key that gave ``p_value`` (its file), ``key_id`` its id.
        window: [start, end) token positions of the best window (windowed detection only).
        windows: windows tested; keys: keys tested (the Bonferroni factors).
    """

    scheme: str
    key: str
    key_id: str
    scored_tokens: int
    score: float
    p_value: float
    z_score: float
    window: tuple[int, int] | None = None
    windows: int = 1
    keys: int = 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_pairs(
    token_ids: Sequence[int], key: Key, context: Sequence[int] = ()
) -> list[ScoredPair]:
    """Every scorable position of ``token_ids`` in order, repeats included.

    Args:
        context: ids that precede the text (a prompt): they give the first tokens their
            context but are never scored themselves.
    """
    ids = [int(i) for i in (*context, *token_ids)]
    offset, history = len(context), key.history
    pairs = []
    for i in range(max(offset, history), len(ids)):
        window, token = ids[i - history : i], ids[i]
        pair = (key.prfs[0].seed(window, token), token)
        pairs.append(ScoredPair(i - offset, pair, token_value(key, window, token)))
    return pairs


def token_value(key: Key, context: Sequence[int], token: int) -> float:
    """One pair's value: kgw 1.0 (green) or 0.0; gumbel -log(1 - u) (dual: v = max(u) ** 2)."""
    if key.scheme == "kgw":
        return 1.0 if key.prfs[0].uniform(context, token) < key.gamma else 0.0
    u = max(prf.uniform(context, token) for prf in key.prfs)
    if key.dual:
        u = u * u
    return -math.log1p(-u)


def detect(
    token_ids: Sequence[int],
    key: Key,
    *,
    context: Sequence[int] = (),
    window: int | None = None,
) -> Detection:
    """Test ``token_ids`` for ``key``'s watermark.

    Args:
        token_ids: the text's ids, from the key's tokenizer.
        key: the key (see ``keys.load_key``).
        context: ids before the text (e.g. its prompt), read as context only.
        window: test every run of this many scored tokens instead of the whole text, for a
            watermarked span inside longer text (Bonferroni over the runs).

    Returns:
        A :class:`Detection`; a text with no scorable token has n = 0 and p = 1.
    """
    pairs = score_pairs(token_ids, key, context)
    if window is not None and window < 1:
        raise ConfigError(f"--window {window}: a number of tokens >= 1")
    if window is None or window >= len(pairs):
        n, score = _unique_sum(pairs)
        span = None if window is None else (_span(pairs, 0, len(pairs) - 1))
        return _verdict(key, n, score, window=span)
    return _windowed(key, pairs, window)


def detect_pooled(
    sequences: Iterable[Sequence[int]],
    key: Key,
    *,
    contexts: Iterable[Sequence[int]] | None = None,
) -> Detection:
    """One test over many texts (e.g. a suspect model's samples): every (context, token) pair
    of the pool is scored once, however many texts repeat it."""
    contexts = contexts if contexts is not None else itertools.repeat(())
    seen: dict[Hashable, float] = {}
    for ids, before in zip(sequences, contexts, strict=False):
        for scored in score_pairs(ids, key, before):
            seen.setdefault(scored.pair, scored.value)
    return _verdict(key, len(seen), math.fsum(seen.values()))


def detect_many(
    token_ids: Sequence[int],
    keys: Sequence[Key],
    *,
    context: Sequence[int] = (),
    window: int | None = None,
) -> Detection:
    """Test for any of several keys: the smallest p-value, times the number of keys."""
    if not keys:
        raise ConfigError("--key: give at least one key file")
    results = [detect(token_ids, k, context=context, window=window) for k in keys]
    best = min(results, key=lambda r: r.p_value)
    return _replace(best, p_value=stats.bonferroni(best.p_value, len(keys)), keys=len(keys))


def p_values(key: Key, n: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Exact p-values of arrays of (n, score) under ``key``'s scheme (1 where n = 0)."""
    n, score = np.asarray(n), np.asarray(score, dtype=np.float64)
    safe_n = np.maximum(n, 1)
    if key.scheme == "kgw":
        p = scipy_stats.binom.sf(np.rint(score) - 1, safe_n, key.gamma)
    else:
        p = scipy_stats.gamma.sf(score, safe_n)
    return np.where(n > 0, p, 1.0)


def _unique_sum(pairs: Sequence[ScoredPair]) -> tuple[int, float]:
    seen: dict[Hashable, float] = {}
    for scored in pairs:
        seen.setdefault(scored.pair, scored.value)
    return len(seen), math.fsum(seen.values())


def _windowed(key: Key, pairs: list[ScoredPair], window: int) -> Detection:
    """Slide a run of ``window`` scored tokens along the text, keeping counts per pair so each
    step is O(1); the pairs of a run are de-duplicated within the run."""
    counts: dict[Hashable, int] = {}
    distinct, total = 0, 0.0
    starts, ns, scores = [], [], []
    for i, scored in enumerate(pairs):
        counts[scored.pair] = counts.get(scored.pair, 0) + 1
        if counts[scored.pair] == 1:
            distinct, total = distinct + 1, total + scored.value
        if i >= window:
            old = pairs[i - window]
            counts[old.pair] -= 1
            if counts[old.pair] == 0:
                distinct, total = distinct - 1, total - old.value
        if i >= window - 1:
            starts.append(i - window + 1)
            ns.append(distinct)
            scores.append(total)
    p = p_values(key, np.array(ns), np.array(scores))
    best = int(np.argmin(p))
    start, end = starts[best], starts[best] + window - 1
    n, score = _unique_sum(pairs[start : end + 1])  # exact sum, free of running float error
    result = _verdict(key, n, score, window=_span(pairs, start, end))
    corrected = stats.bonferroni(result.p_value, len(starts))
    return _replace(result, p_value=corrected, windows=len(starts))


def _span(pairs: Sequence[ScoredPair], first: int, last: int) -> tuple[int, int] | None:
    if not pairs:
        return None
    return (pairs[first].position, pairs[last].position + 1)


def _verdict(key: Key, n: int, score: float, window: tuple[int, int] | None = None) -> Detection:
    if key.scheme == "kgw":
        green = round(score)
        p, z = stats.binomial_p_value(green, n, key.gamma), stats.z_score(green, n, key.gamma)
        score = float(green)
    else:
        p, z = stats.gamma_p_value(score, n), stats.gumbel_z_score(score, n)
    return Detection(key.scheme, key.name, key.key_id, n, score, p, z, window=window)


def _replace(result: Detection, **changes: Any) -> Detection:
    return Detection(**{**asdict(result), **changes})
