"""How well scores separate attackers from benign keys: ROC AUC, the true-positive rate at a
false-positive rate, and the threshold that holds a false-positive rate."""

from __future__ import annotations

import numpy as np


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """The probability that a random attacker outscores a random benign key (ties count half);
    NaN when either class is empty."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    # Mann-Whitney U through average ranks.
    order = np.argsort(np.concatenate([pos, neg]), kind="stable")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def threshold_at_fpr(benign_scores: np.ndarray, fpr: float) -> float:
    """The lowest threshold (score ≥ threshold flags) that flags at most ``fpr`` of the benign
    keys."""
    s = np.sort(np.asarray(benign_scores, float))[::-1]
    allowed = int(np.floor(fpr * len(s)))
    if allowed >= len(s):
        return float(s[-1])
    # Flag strictly above the (allowed+1)-th highest benign score.
    return float(np.nextafter(s[allowed], np.inf))


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float = 0.01) -> float:
    """The share of attackers flagged at the threshold that flags ≤ ``fpr`` of benign keys."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    if not labels.any() or labels.all():
        return float("nan")
    threshold = threshold_at_fpr(scores[~labels], fpr)
    return float((scores[labels] >= threshold).mean())
