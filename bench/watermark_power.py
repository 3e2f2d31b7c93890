"""Power and cost of the watermark: how soon it is detected, what removes it, what it costs.

All functions are pure over token ids and texts; the generation they read is done by
``bench/watermark.py`` through retort's capture (resumable stores).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from retort.evaluate.answers import contains_match
from retort.watermark.detect import detect, p_values, score_pairs
from retort.watermark.keys import Key

TARGET = 1e-6  # the goal: p < 1e-6 within 100 tokens at delta = 2
_WORD = re.compile(r"\S+")


def prefix_p_values(token_ids: Sequence[int], key: Key, context: Sequence[int]) -> np.ndarray:
    """p[L - 1] = the exact p-value of the first L completion tokens, for every L (one pass:
    the de-duplicated counts grow with the prefix)."""
    seen: dict[Hashable, float] = {}
    total = 0.0
    ns, scores = np.zeros(len(token_ids), int), np.zeros(len(token_ids))
    for scored in score_pairs(token_ids, key, context):
        if scored.pair not in seen:
            seen[scored.pair] = scored.value
            total += scored.value
        ns[scored.position], scores[scored.position] = len(seen), total
    # positions with no scorable token keep the counts before them
    ns, scores = np.maximum.accumulate(ns), np.maximum.accumulate(scores)
    return p_values(key, ns, scores)


def tokens_needed(prefix_p: np.ndarray, level: float = TARGET) -> int | None:
    """The smallest prefix length with p < ``level`` (None: never, in this completion)."""
    hits = np.flatnonzero(prefix_p < level)
    return int(hits[0]) + 1 if len(hits) else None


def needed_summary(needed: Sequence[int | None]) -> dict[str, Any]:
    """Median and 90th percentile of tokens needed; texts that never reach the level count as
    infinite (so a percentile past the reached share is reported as None)."""
    values = np.array([math.inf if v is None else v for v in needed], dtype=float)
    out: dict[str, Any] = {"texts": len(values), "reached": int(np.isfinite(values).sum())}
    for name, q in (("median", 50), ("p90", 90)):
        v = float(np.percentile(values, q, method="higher")) if len(values) else math.inf
        out[name] = None if math.isinf(v) else int(v)
    return out


def detection_rates(p: Sequence[float]) -> dict[str, float]:
    """Share of texts detected at p < 1e-6 and at p < 1e-3."""
    arr = np.asarray(p, dtype=float)
    return {"p<1e-6": float((arr < 1e-6).mean()), "p<1e-3": float((arr < 1e-3).mean())}


def detect_text(text: str, key: Key, tokenizer: Any) -> float:
    """The p-value of a text as an attacker hands it back: re-tokenized, no prompt context."""
    return detect(tokenizer.encode(text, add_special_tokens=False), key).p_value


def edit_words(text: str, fraction: float, vocabulary: Sequence[str], rng: random.Random) -> str:
    """Replace ``fraction`` of the words (whitespace-separated) by random corpus words."""
    words = _WORD.findall(text)
    chosen = set(rng.sample(range(len(words)), round(fraction * len(words)))) if words else set()
    return " ".join(rng.choice(vocabulary) if i in chosen else w for i, w in enumerate(words))


def paired_mean(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Mean of b - a with a 95 % t interval and the paired t-test's p-value."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    diff = y - x
    out: dict[str, Any] = {"pairs": len(diff), "a": float(x.mean()), "b": float(y.mean())}
    out["diff"] = float(diff.mean())
    if len(diff) > 1:
        half = scipy_stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / math.sqrt(len(diff))
        out["ci95"] = [out["diff"] - half, out["diff"] + half]
        out["p_value"] = float(scipy_stats.ttest_rel(y, x).pvalue)
    return out


def paired_accuracy(a: Sequence[bool], b: Sequence[bool]) -> dict[str, Any]:
    """Accuracy of b minus a on the same prompts: a 95 % interval for paired proportions and
    McNemar's exact test (a binomial test on the discordant pairs)."""
    x, y = np.asarray(a, bool), np.asarray(b, bool)
    n = len(x)
    only_a, only_b = int((x & ~y).sum()), int((~x & y).sum())
    diff = (only_b - only_a) / n
    se = math.sqrt(max(only_a + only_b - (only_b - only_a) ** 2 / n, 0)) / n
    discordant = only_a + only_b
    mcnemar = scipy_stats.binomtest(only_b, discordant).pvalue if discordant else 1.0
    return {
        "prompts": n,
        "a": float(x.mean()),
        "b": float(y.mean()),
        "diff": diff,
        "ci95": [diff - 1.96 * se, diff + 1.96 * se],
        "discordant": [only_a, only_b],
        "mcnemar_p": float(mcnemar),
    }


def graded(rows: Sequence[dict[str, Any]]) -> dict[str, bool]:
    """Row id -> the completion contains its reference (``retort.evaluate``'s contains match)."""
    return {r["id"]: contains_match(r["completion"], r["reference"]) for r in rows}


def mean_nll(teacher: Any, rows: Sequence[dict[str, Any]], batch_size: int) -> dict[str, float]:
    """Row id -> the (unwatermarked) teacher's mean NLL per completion token, teacher-forced."""
    out = {}
    for start in range(0, len(rows), batch_size):
        chunk = [r for r in rows[start : start + batch_size] if r["completion_token_ids"]]
        prompts = [list(r["prompt_token_ids"]) for r in chunk]
        sequences = [
            p + list(r["completion_token_ids"]) for p, r in zip(prompts, chunk, strict=True)
        ]
        for row, prompt, scored in zip(
            chunk, prompts, teacher.token_logprobs(sequences), strict=True
        ):
            written = scored[len(prompt) - 1 :]  # position i scores token i + 1
            out[row["id"]] = -sum(written) / len(written)
    return out
