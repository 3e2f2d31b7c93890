"""PRADA (Juuti et al., "PRADA: Protecting against DNN Model Stealing Attacks", EuroS&P 2019):
a client's successive queries stop looking natural.

For each query in arrival order, take its minimum distance to every earlier query of the key
(Euclidean, between unit embeddings: √(2 − 2 cos)). A natural stream of queries gives a set
of minimum distances that fits a normal distribution well; an attacker's synthetic queries (a
grid or sweep over a space, perturbations of a few seeds, exact repeats) give a skewed or
lumpy set. Shapiro-Wilk's W measures the fit (1 = perfectly normal).

The decision rule of the paper: flag the client once W < δ, with δ chosen on benign clients
so that few of them fall below it (``prada_delta``: the benign W at the target false-positive
rate). Here the same W also enters the combined score as ``prada.nonnormality`` = 1 − W.

Simplification (documented): the paper keeps a growing set of queries per predicted class and
adds a query to it only when its distance is not an outlier; without classes we keep every
earlier query of the window. A set whose distances are all equal (every query exactly as far
from its nearest predecessor, or all exact repeats) is a point mass: Shapiro-Wilk is undefined
there, and no natural stream produces it, so it reads W = 0.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

from retort.guard.detect.features.base import Feature

MIN_QUERIES = 20  # Shapiro-Wilk needs a few dozen points before W means much


class Prada:
    """Non-normality of the distances from each query to its nearest earlier one."""

    features = (
        Feature(
            "prada.nonnormality",
            "each query's distance to its nearest earlier query is unnaturally distributed "
            "(1 − Shapiro-Wilk W = {value:.2f}; PRADA)",
            neutral=0.05,
        ),
    )

    def values_from(self, embeddings: np.ndarray) -> dict[str, float]:
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            return {"prada.nonnormality": self.features[0].neutral}
        x = x[np.einsum("nd,nd->n", x, x) > 0]  # embedded rows only
        if x.shape[0] < MIN_QUERIES:
            return {"prada.nonnormality": self.features[0].neutral}
        return {"prada.nonnormality": 1.0 - prada_statistic(x)}


def min_distances(embeddings: np.ndarray) -> np.ndarray:
    """Shape (N − 1,): for queries 1..N − 1 in arrival order, the Euclidean distance to the
    nearest earlier query."""
    x = np.asarray(embeddings, dtype=np.float64)  # (N, D)
    squared = np.einsum("nd,nd->n", x, x)  # (N,)
    d2 = squared[:, None] + squared[None, :] - 2.0 * (x @ x.T)  # (N, N)
    d2[np.triu_indices(len(x))] = np.inf  # only earlier queries (j < i) count
    return np.sqrt(np.maximum(d2[1:].min(1), 0.0))


def prada_statistic(embeddings: np.ndarray) -> float:
    """PRADA's Shapiro-Wilk W over the minimum-distance set of ``embeddings`` (N, D), rows in
    arrival order. 1 when the set looks normal, lower when it does not; 0 for a set of equal
    distances. Needs N ≥ 4 (three distances)."""
    distances = min_distances(embeddings)
    if len(distances) < 3:
        raise ValueError(f"PRADA needs at least 4 queries, got {len(distances) + 1}")
    # float noise around an exact repeat or a perfect grid must not read as spread
    if float(np.ptp(distances)) <= 1e-6 * max(float(distances.max()), 1.0):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on N > 5000; W is still what we want
        return float(stats.shapiro(distances).statistic)


def prada_delta(benign_statistics: np.ndarray, fpr: float = 0.01) -> float:
    """PRADA's threshold δ: the ``fpr`` quantile of benign clients' W, so that flagging
    W < δ flags at most that share of them."""
    values = np.asarray(benign_statistics, dtype=np.float64)
    if values.size == 0:
        raise ValueError("PRADA's δ needs the W of at least one benign client")
    return float(np.quantile(values, fpr, method="lower"))
