"""The benign-calibrated window test: does a key's latest window of prompts look like benign
traffic? After the 2026 traffic-window detector, which embeds queries and tests each window
against benign history with MMD, calibrated on benign traffic only.

``Reference.build`` takes benign traffic's embeddings grouped by key and splits the keys in
two (seeded): some give the **pool**, at most ``pool_size`` rows sampled evenly over them,
that every window is compared with; the rest are **held out** for calibration. The
RBF kernel k(x, y) = exp(−‖x − y‖² / 2σ²) takes σ from the median heuristic (median distance
between pool rows) and keeps it. The **null** is the unbiased MMD² between the pool and
``calibration_windows`` windows of consecutive prompts of held-out keys, taken from the keys
in turn: what a benign key the pool has never seen looks like. Windows come from held-out
keys, not pool rows, because a window of the pool's own rows sits closer to it than any new
key's and would make the null too small (too many benign keys flagged).

The null depends on the window size (smaller windows vary more), so it is drawn for a few
sizes (``m/2``, ``3m/4``, ``m``); a key with n prompts is tested on its last s of them, s the
largest calibrated size ≤ n, against that size's null. p = (1 + #null ≥ stat) / (1 + #null),
so with 200 calibration windows p ≥ 1/201 and −log10 p ≤ 2.30.

Keys split as ``_pool_keys`` says: the pool needs only ``pool_size`` rows, the null as many
distinct keys as it can get; with fewer than ``MIN_CALIBRATION_KEYS`` held-out keys the null's
tail depends on which keys it drew (on synthetic traffic, 25 calibration keys gave 7 % of
benign windows p < 0.01 on one seed in four), so a warning is logged.

With a single benign key the split is in time instead (its earlier half is the pool). When no
held-out key has enough prompts for a size, windows run over the held-out keys' prompts
concatenated in key order, with a logged warning: such windows mix keys, sit closer to the
pool than one key's would, so the null comes out small and benign keys are flagged more often
than the nominal level.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retort.errors import ConfigError, InputError
from retort.guard.detect.features.base import Feature

log = logging.getLogger(__name__)

WINDOW = 64
POOL = 2000
SIZE_FRACTIONS = (0.5, 0.75, 1.0)
MIN_CALIBRATION_KEYS = 100  # below it the null's tail moves with which keys it drew


@dataclass(frozen=True)
class WindowResult:
    """One window's test: the unbiased MMD² against the pool, its p-value under the benign
    null, how many of the latest prompts it used, and whether p < alpha."""

    statistic: float
    p_value: float
    size: int
    flagged: bool


class Reference:
    """Benign traffic as the window test needs it: the pool, the kernel width, the nulls.

    Build with ``Reference.build``; ``save``/``load`` keep it as ``.npz`` for the gateway.
    """

    def __init__(
        self,
        pool: np.ndarray,
        bandwidth: float,
        sizes: np.ndarray,
        nulls: np.ndarray,
        embedder: str = "",
    ) -> None:
        self.pool = np.ascontiguousarray(pool, dtype=np.float32)  # (P, D)
        self.bandwidth = float(bandwidth)
        self.sizes = np.asarray(sizes, dtype=np.int64)  # (S,), increasing
        self.nulls = np.sort(np.asarray(nulls, dtype=np.float64), axis=1)  # (S, C)
        self.embedder = embedder
        self.gamma = 1.0 / (2.0 * self.bandwidth**2)
        self._pool_sq = np.einsum("pd,pd->p", self.pool, self.pool)  # (P,)
        self._pool_term = _mean_off_diagonal(self._kernel_pool(self.pool, self._pool_sq))

    @property
    def window(self) -> int:
        """The full window size m."""
        return int(self.sizes[-1])

    @property
    def dim(self) -> int:
        return int(self.pool.shape[1])

    @classmethod
    def build(
        cls,
        embeddings_by_key: dict[str, np.ndarray],
        window: int = WINDOW,
        calibration_windows: int = 200,
        seed: int = 0,
        pool_size: int = POOL,
        embedder: str = "",
    ) -> Reference:
        """The reference from benign traffic.

        Args:
            embeddings_by_key: each benign key's prompt embeddings, (n_k, D), arrival order.
            window: m, the prompts a full window holds.
            calibration_windows: windows drawn per size for the null.
            seed: every random choice (key split, pool rows, window starts) follows it.
            pool_size: most pool rows kept.
            embedder: the embedder's name, checked by users of a saved reference.

        Raises:
            InputError: too little benign traffic to build a pool and calibrate a window.
        """
        rng = np.random.default_rng(seed)
        rows = {k: _embedded(embeddings_by_key[k]) for k in sorted(embeddings_by_key)}
        keys = [k for k in rows if len(rows[k])]
        if not keys:
            raise InputError("window test: the benign baseline has no embedded prompts")
        if len(keys) == 1:  # split one key in time: earlier half pool, later half held out
            only = rows[keys[0]]
            half = len(only) // 2
            pool_parts, held = [only[:half]], [only[half:]]
        else:
            order = [keys[i] for i in rng.permutation(len(keys))]
            cut = _pool_keys([len(rows[k]) for k in order], pool_size)
            pool_parts, held = [rows[k] for k in order[:cut]], [rows[k] for k in order[cut:]]
        pool = _even_sample(pool_parts, pool_size, rng)
        if len(pool) < 2:
            raise InputError("window test: the benign baseline needs at least 4 prompts")
        bandwidth = _median_distance(pool)
        reference_sizes = sorted({max(2, round(window * f)) for f in SIZE_FRACTIONS})
        partial = cls(pool, bandwidth, np.array([window]), np.zeros((1, 1)), embedder)
        sizes, nulls = [], []
        for size in reference_sizes:
            sources = [h for h in held if len(h) >= size]
            if not sources:
                stream = np.concatenate(held)
                if len(stream) < size:
                    continue
                log.warning(
                    "window test: no held-out benign key has %d embedded prompts; calibrating "
                    "on keys mixed together (flags benign keys more often than nominal)",
                    size,
                )
                sources = [stream]
            if len(sources) < MIN_CALIBRATION_KEYS:
                log.warning(
                    "window test: the null for windows of %d rests on %d benign keys; with "
                    "under %d its p-values are rough (give a larger baseline)",
                    size,
                    len(sources),
                    MIN_CALIBRATION_KEYS,
                )
            null = np.empty(calibration_windows)
            # keys in turn (a fresh shuffle each round): each key gives a window before any
            # gives two, since the null varies more between keys than within one
            turns = np.concatenate(
                [
                    rng.permutation(len(sources))
                    for _ in range(-(-calibration_windows // len(sources)))
                ]
            )
            for i in range(calibration_windows):
                source = sources[int(turns[i])]
                start = int(rng.integers(len(source) - size + 1))
                null[i] = partial.statistic(source[start : start + size])
            sizes.append(size)
            nulls.append(null)
        if not sizes:
            raise InputError(
                f"window test: the held-out benign keys hold under {reference_sizes[0]} "
                "embedded prompts; give a larger baseline or a smaller window"
            )
        # the pool's kernel term is already computed; only the nulls change
        partial.sizes = np.array(sizes, dtype=np.int64)
        partial.nulls = np.sort(np.stack(nulls), axis=1)
        return partial

    def _kernel_pool(self, x: np.ndarray, x_sq: np.ndarray) -> np.ndarray:
        """k(x, pool), shape (len(x), P)."""
        d2 = x_sq[:, None] + self._pool_sq[None, :] - 2.0 * (x @ self.pool.T)
        return np.exp(-self.gamma * np.maximum(d2, 0.0))

    def statistic(self, window: np.ndarray) -> float:
        """Unbiased MMD² between ``window`` (m, D) and the pool."""
        w = np.ascontiguousarray(window, dtype=np.float32)  # (m, D)
        w_sq = np.einsum("md,md->m", w, w)  # (m,)
        d2 = w_sq[:, None] + w_sq[None, :] - 2.0 * (w @ w.T)  # (m, m)
        k_ww = np.exp(-self.gamma * np.maximum(d2, 0.0))
        k_wp = self._kernel_pool(w, w_sq)  # (m, P)
        return _mean_off_diagonal(k_ww) + self._pool_term - 2.0 * float(k_wp.mean())

    def test(self, embeddings: np.ndarray, alpha: float = 0.01) -> WindowResult:
        """The latest prompts of ``embeddings`` (N, D), arrival order, against the null of
        the largest calibrated size ≤ N.

        Raises:
            ValueError: N is below the smallest calibrated size.
            ConfigError: the embeddings' dimension is not the reference's.
        """
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ConfigError(
                f"window test: embeddings of dimension {x.shape[-1]} against a reference of "
                f"dimension {self.dim} ({self.embedder or 'unknown embedder'}); rebuild the "
                "baseline with the embedder the scan uses"
            )
        fitting = np.flatnonzero(self.sizes <= len(x))
        if fitting.size == 0:
            raise ValueError(f"window test needs {self.sizes[0]} prompts, got {len(x)}")
        s = int(fitting[-1])
        size = int(self.sizes[s])
        stat = self.statistic(x[-size:])
        null = self.nulls[s]
        exceed = len(null) - int(np.searchsorted(null, stat, side="left"))  # #null ≥ stat
        p = (1 + exceed) / (1 + len(null))
        return WindowResult(stat, p, size, p < alpha)

    def p_value(self, window_embeddings: np.ndarray) -> float:
        """The p-value of the latest window of ``window_embeddings`` (see ``test``)."""
        return self.test(window_embeddings).p_value

    def save(self, path: str | Path) -> None:
        """Write the reference as ``.npz`` (pool, bandwidth, sizes, nulls, embedder name),
        whole: through a temporary file beside it."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as handle:  # an open file keeps numpy from appending ".npz"
            np.savez_compressed(
                handle,
                pool=self.pool,
                bandwidth=np.float64(self.bandwidth),
                sizes=self.sizes,
                nulls=self.nulls,
                embedder=np.str_(self.embedder),
            )
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> Reference:
        """A reference ``save`` wrote.

        Raises:
            InputError: the file is missing or is not such a reference.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(
                    data["pool"],
                    float(data["bandwidth"]),
                    data["sizes"],
                    data["nulls"],
                    str(data["embedder"]),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(
                f"{path}: not a window-test reference ({exc}); build one with "
                "`retort guard scan LOG --embedder hash --save-baseline FILE.npz`"
            ) from exc


def mmd_window_test(
    reference: Reference, embeddings: np.ndarray, alpha: float = 0.01
) -> WindowResult:
    """The baseline on its own: the latest window of ``embeddings`` (N, D) against benign
    traffic; flagged when p < ``alpha``."""
    return reference.test(embeddings, alpha)


class WindowTest:
    """The latest window of prompts against benign traffic, as −log10 p."""

    features = (
        Feature(
            "window.mmd_log10p",
            "latest prompts differ from benign traffic (MMD test, −log10 p = {value:.1f})",
            neutral=0.0,
        ),
    )

    def __init__(self, reference: Reference) -> None:
        self.reference = reference

    def values_from(self, embeddings: np.ndarray) -> dict[str, float]:
        x = _embedded(embeddings)
        if len(x) < max(self.reference.window / 2, self.reference.sizes[0]):
            return {"window.mmd_log10p": 0.0}
        return {"window.mmd_log10p": float(-np.log10(self.reference.test(x).p_value))}


def _pool_keys(lengths: list[int], pool_size: int) -> int:
    """How many of the (shuffled) keys feed the pool: enough for twice ``pool_size`` rows,
    at least a quarter of the keys (the pool should stand for many users) and at most half;
    the rest calibrate, and the null is only as reliable as the number of keys behind it."""
    enough = int(np.searchsorted(np.cumsum(lengths), 2 * pool_size)) + 1
    return min(max(enough, -(-len(lengths) // 4)), -(-len(lengths) // 2))


def _embedded(rows: np.ndarray) -> np.ndarray:
    """The rows of ``rows`` (n, D) that are not all zero (the embedder's "no text")."""
    x = np.asarray(rows, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        return np.zeros((0, x.shape[-1] if x.ndim == 2 else 0), dtype=np.float32)
    return x[np.einsum("nd,nd->n", x, x) > 0]


def _mean_off_diagonal(k: np.ndarray) -> float:
    """Mean of a square matrix's entries off its diagonal."""
    n = k.shape[0]
    return (float(k.sum()) - float(np.trace(k))) / (n * (n - 1))


def _median_distance(x: np.ndarray) -> float:
    """Median Euclidean distance between distinct rows of ``x``; 1 if they all coincide."""
    sq = np.einsum("nd,nd->n", x, x)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    upper = np.sqrt(np.maximum(d2[np.triu_indices(len(x), 1)], 0.0))
    median = float(np.median(upper))
    return median if median > 1e-6 else 1.0


def _even_sample(parts: list[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``size`` rows drawn over ``parts`` as evenly as they allow (each part its share,
    the unused share passed on), so one heavy key cannot stand for all benign traffic."""
    remaining = size
    taken = []
    for i, part in enumerate(sorted(parts, key=len)):  # smallest first, so leftovers pass on
        share = remaining // (len(parts) - i)
        count = min(share, len(part))
        taken.append(part[np.sort(rng.choice(len(part), size=count, replace=False))])
        remaining -= count
    return np.concatenate(taken).astype(np.float32)
