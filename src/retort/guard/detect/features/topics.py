"""Topics: how widely a key's prompts range over meaning, from their sentence embeddings.

A crawl that maps a model's capabilities spreads its prompts evenly over many directions; a
campaign harvesting one skill (say, competition maths with chain of thought) stays close to one
point; a person's chat wanders between a few subjects. Over the window's N embeddings, rows of
unit length:

- ``topics.diversity``: mean pairwise cosine distance, 1 − mean over pairs i ≠ j of xᵢ·xⱼ.
  0 when every prompt is the same, 1 for mutually orthogonal prompts.
- ``topics.coverage``: the effective number of directions the prompts' distribution spans,
  as a share of the embedding dimension D. It is the participation ratio of the covariance
  eigenvalues, (Σλ)² / Σλ² = (tr Σ)² / tr(Σ²) (1 when all variance lies on one axis, k for k
  equal axes), divided by D, so it lies in (0, 1]; 0 when every row is equal (no direction at
  all). The plain sample ratio is capped by N − 1 and grows with the window (on all-MiniLM
  prompts: 12 at N = 16, 50 at N = 256, for a population value near 62), so it is estimated
  without that bias: tr Σ from the centred rows' squared norms over N − 1, tr(Σ²) from the
  mean squared inner product of distinct centred rows (both read off the N × N Gram matrix).
  Windows of different sizes then read alike; the estimate is noisier for small N.
- ``topics.focus``: mean cosine to the centroid, which for unit rows is ‖mean row‖: 1 when
  every prompt is the same, near 0 for prompts scattered on the sphere. A narrow capability
  focus reads high. For unit rows focus² = (1 + (N − 1)(1 − diversity)) / N, so with many
  prompts focus ≈ √(1 − diversity): the two say the same thing on different scales, one
  pairwise and one against the centre; the fitted weights decide how much each counts.

All-zero rows (texts the embedder saw as empty) are left out. Neutral below ``MIN_PROMPTS``
embedded prompts: a handful of prompts says nothing about a key's range.
"""

from __future__ import annotations

import numpy as np

from retort.guard.detect.features.base import Feature

MIN_PROMPTS = 16


class Topics:
    """Spread of the window's prompt embeddings: pairwise, by direction, around the centre."""

    features = (
        Feature(
            "topics.diversity",
            "prompts range widely in meaning (mean pairwise cosine distance {value:.2f})",
            neutral=0.85,
        ),
        Feature(
            "topics.coverage",
            "prompts spread over many independent directions ({value:.2f} of the embedding's "
            "dimensions in effect)",
            neutral=0.15,
        ),
        Feature(
            "topics.focus",
            "prompts stay close to one subject (mean cosine to their centre {value:.2f})",
            neutral=0.35,
        ),
    )

    def values_from(self, embeddings: np.ndarray) -> dict[str, float]:
        out = {f.name: f.neutral for f in self.features}
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            return out
        x = x[np.einsum("nd,nd->n", x, x) > 0]  # (N, D), embedded rows only
        n = x.shape[0]
        if n < MIN_PROMPTS:
            return out
        total = x.sum(0)  # (D,)
        # Σ_{i≠j} xᵢ·xⱼ = ‖Σx‖² − Σ‖xᵢ‖², and ‖xᵢ‖ = 1
        off_diagonal = float(total @ total) - float(np.einsum("nd,nd->", x, x))
        out["topics.diversity"] = 1.0 - off_diagonal / (n * (n - 1))
        out["topics.focus"] = float(np.linalg.norm(total / n))
        out["topics.coverage"] = coverage(x)
        return out


def coverage(x: np.ndarray) -> float:
    """Bias-corrected participation ratio of the covariance of ``x`` (N ≥ 2, D), over D; 0
    for rows that are all equal."""
    n, d = x.shape
    centred = x - x.mean(0)  # (N, D)
    gram = centred @ centred.T  # (N, N)
    squares = np.einsum("ii->i", gram)  # (N,), ‖cᵢ‖²
    if float(squares.sum()) <= 1e-12 * n:
        return 0.0
    trace = float(squares.sum()) / (n - 1)  # tr Σ, unbiased
    # tr(Σ²) ≈ E[(cᵢ·cⱼ)²] for i ≠ j; the diagonal (‖cᵢ‖⁴) would add the (tr Σ)²/N bias
    trace_sq = (float(np.einsum("ij,ij->", gram, gram)) - float(squares @ squares)) / (n * (n - 1))
    ratio = trace * trace / trace_sq if trace_sq > 0 else float(d)
    return min(max(ratio, 1.0), float(d)) / d
