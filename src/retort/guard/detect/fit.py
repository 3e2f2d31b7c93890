"""Fit the detector's logistic model on labelled traffic (simulated, or a provider's own):
standardize each feature on the benign rows, L2-regularized logistic regression, then the
operating point that flags a target share of benign keys."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from retort.guard.detect.features import all_features
from retort.guard.detect.metrics import threshold_at_fpr
from retort.guard.detect.model import Scorer, Weight


def fit_weights(
    rows: Sequence[dict[str, float]],
    labels: Sequence[bool],
    features: Sequence[str],
    l2: float = 1.0,
    directions: dict[str, int] | None = None,
) -> tuple[dict[str, Weight], float]:
    """Weights and bias for ``features`` from feature rows with attack/benign labels.

    Rows are class-balanced by weighting, so a log with few attackers still fits; missing
    values take the benign mean (the scorer treats a missing feature the same way).

    ``directions`` (default: each feature's ``Feature.suspicious``) bounds weights' signs: +1,
    the feature may only raise the score as it grows; -1, only as it falls; 0, free. Unbounded,
    the fit learns the training traffic's accidents — on the simulator "more requests an hour,
    or asking for logprobs, looks benign", because honest batch jobs and evaluations are the
    busiest keys and the ones asking for logprobs — and an attacker would exploit it by asking
    for more of what they want. So the extraction prizes (volume, logprobs, top-k, n) are
    bounded; the other features stay free, since bounding them all cost the simulator's hard
    negatives ~3 % false flags (bench/detect.py; docs/detect.md).
    """
    y = np.asarray(labels, dtype=float)
    x = np.array([[r.get(f, np.nan) for f in features] for r in rows], dtype=float)
    benign = x[y == 0]
    mean = np.nanmean(benign, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    scale = np.nanstd(np.where(np.isfinite(x), x, np.nan), axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 1e-9), scale, 1.0)
    x = np.where(np.isfinite(x), x, mean)
    z = np.clip((x - mean) / scale, -6, 6)
    w_class = np.where(y == 1, 0.5 / max(y.sum(), 1), 0.5 / max((1 - y).sum(), 1))

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        logit = z @ theta[:-1] + theta[-1]
        p = 1 / (1 + np.exp(-logit))
        # log(1 + e^{-|l|}) form keeps the loss finite for confident rows.
        nll = np.logaddexp(0, logit) - y * logit
        value = float((w_class * nll).sum() + 0.5 * l2 * (theta[:-1] ** 2).sum() / len(y))
        grad_logit = w_class * (p - y)
        grad = np.append(z.T @ grad_logit + l2 * theta[:-1] / len(y), grad_logit.sum())
        return value, grad

    if directions is None:
        known = all_features()
        directions = {f: known[f].suspicious for f in features if f in known}
    bounds = [_bound(directions.get(f, 0)) for f in features] + [(None, None)]
    start = np.zeros(len(features) + 1)
    theta = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds).x
    weights = {
        f: Weight(float(mean[i]), float(scale[i]), float(theta[i]))
        for i, f in enumerate(features)
        if abs(theta[i]) > 1e-6
    }
    return weights, float(theta[-1])


def _bound(direction: int) -> tuple[float | None, float | None]:
    return {1: (0.0, None), -1: (None, 0.0)}.get(direction, (None, None))


def operating_point(benign_key_scores: Sequence[float], fpr: float) -> float:
    """``flag_at`` so that at most ``fpr`` of these benign keys' peak scores are flagged."""
    return min(threshold_at_fpr(np.asarray(benign_key_scores), fpr), 1.0)


def save_weights(
    path: str | Path, weights: dict[str, Weight], bias: float, flag_at: float, meta: dict
) -> None:
    """Write a weights file ``Scorer.load`` reads (whole, through a temporary file)."""
    payload: dict[str, Any] = {
        **meta,
        "bias": bias,
        "flag_at": flag_at,
        "features": {
            name: {"mean": w.mean, "scale": w.scale, "weight": w.weight}
            for name, w in sorted(weights.items())
        },
    }
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)


def scorer_from(weights: dict[str, Weight], bias: float, flag_at: float = 0.5) -> Scorer:
    """A Scorer from fitted weights without a file round trip."""
    return Scorer(weights, bias, flag_at if math.isfinite(flag_at) else 1.0, "fitted")
