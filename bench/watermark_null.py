"""Null texts for the watermark calibration, and what the detector says about them.

Human text comes only from what this project installs from its own files: docstrings of the
standard library (``retort.guard.detect.corpora.stdlib_docs``) and of the Python packages its
``pyproject.toml`` pulls into the venv (read from their source with ``ast``, never imported),
and the quickstart's prompts themselves (short questions, the < 50-token bucket). Each source
file is one token stream, cut into passages whose lengths are drawn uniformly from
[MIN_TOKENS, MAX_TOKENS]; exact duplicate passages are dropped, since a repeated text is not an
independent null test. Unwatermarked model outputs are added by the caller (``bench/watermark.py``).

Every text is tested with keys of its own per scheme (fresh, never shared with another text,
none of which wrote it): each (text, key) is one independent null test. ``fixed_key_spread``
then tests every text with each of a few fixed keys, which is what one provider sees. For
each test the exact p-value (binomial / Gamma tail) and its normal approximation (the
transformers-style z-test) are kept, so the tables can show where the approximation is
anti-conservative.
"""

from __future__ import annotations

import ast
import importlib.util
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from retort.guard.detect import corpora
from retort.watermark import stats
from retort.watermark.detect import detect
from retort.watermark.keys import Key

MIN_TOKENS, MAX_TOKENS = 16, 300
# Packages the project's install pulls in (pyproject + its dependencies), sorted: the corpus is
# the same on every machine with the same venv. transformers is left out: its per-model
# docstrings are copies of each other, and near-duplicate nulls would not be independent.
PACKAGES = (
    *("accelerate", "click", "datasets", "fastapi", "httpx", "huggingface_hub", "jinja2"),
    *("networkx", "numpy", "pandas", "peft", "pyarrow", "pydantic", "requests", "rich"),
    *("safetensors", "scipy", "starlette", "sympy", "tqdm", "typer", "yaml"),
)
BUCKETS = ((0, 50, "<50"), (50, 200, "50-200"), (200, 10**9, ">=200"))
LEVELS = (1e-2, 1e-3, 1e-4)


def human_texts(tokenizer: Any, limit: int, seed: int = 0) -> list[dict[str, Any]]:
    """Up to ``limit`` human passages as ``{"source", "token_ids"}``, deterministic for a
    given venv and seed (files in sorted order, lengths from ``random.Random(seed)``)."""
    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    out: list[dict[str, Any]] = []
    for prompt in corpora.builtin_prompts():
        _keep(out, seen, "prompts", tokenizer.encode(prompt.text, add_special_tokens=False))
    for source, text in _streams():
        ids = tokenizer.encode(text, add_special_tokens=False)
        start = 0
        while len(out) < limit and len(ids) - start >= MIN_TOKENS:
            length = rng.randint(MIN_TOKENS, MAX_TOKENS)
            _keep(out, seen, source, ids[start : start + length])
            start += length
        if len(out) >= limit:
            break
    return out[:limit]


def _keep(out: list, seen: set, source: str, ids: list[int]) -> None:
    if tuple(ids) not in seen:
        seen.add(tuple(ids))
        out.append({"source": source, "token_ids": list(ids)})


def _streams() -> Iterator[tuple[str, str]]:
    """(source, text): one stream per stdlib module, then one per package source file."""
    by_module: dict[str, list[str]] = {}
    for doc in corpora.stdlib_docs():
        by_module.setdefault(doc.module, []).append(doc.doc)
    for module in sorted(by_module):
        yield "stdlib", "\n\n".join(by_module[module])
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(root.rglob("*.py")):
            docs = _docstrings(path)
            if docs:
                yield f"site-packages:{package}", "\n\n".join(docs)


def _docstrings(path: Path) -> list[str]:
    """The prose docstrings of one source file (module, classes, functions), doctests cut."""
    try:
        tree = ast.parse(path.read_text(errors="replace"))
    except (SyntaxError, ValueError):
        return []
    out = []
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    for node in ast.walk(tree):
        if isinstance(node, nodes):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 80:
                out.append(doc.split(">>>", 1)[0].strip())
    return [d for d in out if d]


def null_tests(
    texts: Sequence[dict[str, Any]], make_key: Callable[[str], Key], keys_per_text: int
) -> dict[str, np.ndarray]:
    """Every text tested with ``keys_per_text`` keys of its own, none shared with another text,
    so the tests are independent and a KS test over all of them is valid. (With one key for
    every text, texts that share frequent (context, token) pairs share those pairs' u: their
    p-values are correlated under that key, see :func:`fixed_key_spread`.) Per test: scored
    tokens n, exact p, its randomized twin (for KS), the normal-approximation p and z."""
    rng = np.random.default_rng(0)
    ns, exact, randomized, normal, kinds = [], [], [], [], []
    for i, text in enumerate(texts):
        for slot in range(keys_per_text):
            key = make_key(f"null-{i}-{slot}")
            result = detect(text["token_ids"], key, context=text.get("context", ()))
            n, score = result.scored_tokens, result.score
            ns.append(n)
            exact.append(result.p_value)
            # KGW's p = P(X >= g) is discrete; p - U * P(X = g) is exactly uniform under H0.
            atom = scipy_stats.binom.pmf(round(score), n, key.gamma) if key.scheme == "kgw" else 0
            randomized.append(result.p_value - rng.random() * atom if n else rng.random())
            normal.append(_normal_p(key, score, n))
            kinds.append(text["kind"])
    return {
        "n": np.array(ns),
        "exact": np.array(exact),
        "randomized": np.array(randomized),
        "normal": np.array(normal),
        "kind": np.array(kinds),
    }


def fixed_key_spread(texts: Sequence[dict[str, Any]], keys: Sequence[Key]) -> dict[str, Any]:
    """What one provider with one key sees: every text tested with the same key, per key.

    The p-value is exact over random keys for any fixed text; for one fixed key, the texts'
    p-values are correlated through the pairs they share, so that key's false-positive rate
    over a corpus drifts above or below nominal, by more when short contexts (h = 1, or
    selfhash's single anchor) make common pairs recur across texts. Reported per key: the
    rate at 1e-2 and 1e-3 and the mean z over the texts (independent texts would give a
    mean z within about 1 / sqrt(texts) of 0).
    """
    per_key = []
    for key in keys:
        p, z = [], []
        for text in texts:
            result = detect(text["token_ids"], key, context=text.get("context", ()))
            if result.scored_tokens:
                p.append(result.p_value)
                z.append(result.z_score)
        p_array = np.array(p)
        per_key.append(
            {
                "tests": len(p),
                "fpr_0.01": float((p_array <= 1e-2).mean()),
                "fpr_0.001": float((p_array <= 1e-3).mean()),
                "mean_z": float(np.mean(z)),
            }
        )
    rates = np.array([k["fpr_0.01"] for k in per_key])
    means = np.array([k["mean_z"] for k in per_key])
    return {
        "keys": len(per_key),
        "fpr_0.01_mean": float(rates.mean()),
        "fpr_0.01_min": float(rates.min()),
        "fpr_0.01_max": float(rates.max()),
        "fpr_0.001_mean": float(np.mean([k["fpr_0.001"] for k in per_key])),
        "mean_z_sd": float(means.std(ddof=1)) if len(means) > 1 else 0.0,
        "per_key": per_key,
    }


def _normal_p(key: Key, score: float, n: int) -> float:
    if n == 0:
        return 1.0
    if key.scheme == "kgw":
        return stats.normal_p_value(round(score), n, key.gamma)
    return stats.gumbel_normal_p_value(score, n)


def calibration(tests: dict[str, np.ndarray]) -> dict[str, Any]:
    """KS test against uniform and false-positive rates, overall and per length bucket.

    KGW p-values are discrete (a binomial tail), so they are super-uniform, not uniform: KS
    against U[0, 1) rejects on short texts even though P(p <= a) <= a holds. The
    randomized p-value (p - U * P(X = g)), exactly uniform under the null, is the fair KS
    input (``ks_randomized``); ``ks_exact`` is on the raw p. The FPR rows, on the raw exact
    p, are what the validity claim rests on.
    """
    scored = tests["n"] > 0  # texts with no scorable token give p = 1 by definition
    out: dict[str, Any] = {"tests": int(scored.sum()), "unscorable": int((~scored).sum())}
    out["all"] = _rates(tests, scored)
    out["buckets"] = {}
    for low, high, name in BUCKETS:
        out["buckets"][name] = _rates(tests, scored & (tests["n"] >= low) & (tests["n"] < high))
    for kind in sorted(set(tests["kind"].tolist())):
        out[f"kind:{kind}"] = _rates(tests, scored & (tests["kind"] == kind))
    return out


def _rates(tests: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, Any]:
    exact, normal = tests["exact"][mask], tests["normal"][mask]
    row: dict[str, Any] = {"tests": len(exact)}
    if len(exact) == 0:
        return row
    row["ks_randomized"] = _ks(tests["randomized"][mask])
    row["ks_exact"] = _ks(exact)
    row["ks_normal"] = _ks(normal)
    for level in LEVELS:
        for name, p in (("exact", exact), ("normal", normal)):
            hits = int((p <= level).sum())
            row[f"fpr_{name}_{level:g}"] = hits / len(p)
            row[f"hits_{name}_{level:g}"] = hits
            row[f"upper95_{name}_{level:g}"] = _upper(hits, len(p))
    return row


def _ks(p: np.ndarray) -> dict[str, float]:
    result = scipy_stats.kstest(p, "uniform")
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue)}


def _upper(hits: int, n: int) -> float:
    """One-sided 95 % Clopper-Pearson upper bound of a rate seen as hits / n."""
    return float(scipy_stats.beta.ppf(0.95, hits + 1, n - hits)) if hits < n else 1.0
