"""The score: a logistic model over standardized features, with the features that pushed it up
as the reasons. Its weights are fitted on simulated traffic (``bench/detect.py --fit``) and
shipped in ``weights/``, one file per embedder (the topical features' values depend on the
embedder that made them): ``all-MiniLM-L6-v2.json``, ``hash-ngram.json``, and ``none.json`` for
a detector without embeddings. A provider refits on its own labelled traffic the same way."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from retort.errors import ConfigError
from retort.guard.detect.features import all_features

log = logging.getLogger(__name__)
Z_CLIP = 6.0  # one absurd value must not decide a score alone


@dataclass(frozen=True)
class Reason:
    """One feature that raised the score: its value and what it means."""

    feature: str
    value: float
    words: str
    contribution: float  # weight × standardized value, in log-odds


@dataclass(frozen=True)
class Verdict:
    score: float  # 0-1, higher = more likely extraction
    flagged: bool
    reasons: list[Reason] = field(default_factory=list)


@dataclass(frozen=True)
class Weight:
    mean: float
    scale: float
    weight: float


class Scorer:
    """Scores feature values; ``flag_at`` is the operating point."""

    def __init__(
        self, weights: dict[str, Weight], bias: float, flag_at: float, source: str = ""
    ) -> None:
        self.weights, self.bias, self.flag_at, self.source = weights, bias, flag_at, source
        self.features = all_features()

    @classmethod
    def load(cls, path: str | Path | None = None, embedder: str | None = None) -> Scorer:
        """The weights at ``path``, or the packaged ones fitted with the embedder called
        ``embedder`` (None: no embedder; an embedder without packaged weights gets those of
        no embedder, which leave the topical features out)."""
        if path is None:
            packaged = resources.files("retort.guard.detect").joinpath("weights")
            name = embedder or "none"
            if not packaged.joinpath(f"{name}.json").is_file():
                log.warning("no packaged weights for embedder '%s': scoring without it", name)
                name = "none"
            text = packaged.joinpath(f"{name}.json").read_text()
            where = f"retort/guard/detect/weights/{name}.json"
        else:
            where = str(path)
            try:
                text = Path(path).read_text()
            except FileNotFoundError as exc:
                raise ConfigError(f"{path}: no such weights file") from exc
        try:
            raw = json.loads(text)
            weights = {name: Weight(**w) for name, w in raw["features"].items()}
            return cls(weights, float(raw["bias"]), float(raw["flag_at"]), where)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{where}: not a detector weights file ({exc})") from exc

    def score(self, values: dict[str, float], top: int = 3) -> Verdict:
        """The verdict for one key's (or cluster's) feature values; a feature missing from
        ``values`` (no embedder, too few requests) counts as its mean."""
        logit, parts = self.bias, []
        for name, w in self.weights.items():
            if name not in values or not math.isfinite(values[name]):
                continue
            z = max(-Z_CLIP, min(Z_CLIP, (values[name] - w.mean) / w.scale))
            logit += w.weight * z
            parts.append((w.weight * z, name))
        score = 1 / (1 + math.exp(-max(-50.0, min(50.0, logit))))
        reasons = []
        for contribution, name in sorted(parts, reverse=True)[:top]:
            if contribution <= 0:
                break
            feature = self.features.get(name)
            words = feature.describe(values[name]) if feature else f"{name} = {values[name]:.3g}"
            reasons.append(Reason(name, values[name], words, contribution))
        return Verdict(score, score >= self.flag_at, reasons)
