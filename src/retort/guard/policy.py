"""The policy file (guard.yaml): tiers, their limits and extraction controls, the terms, and
the extraction detector's escalation ladder.

Strict like every retort config: an unknown key is an error naming the key, where it is, and
its nearest valid spelling.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from retort.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Logprobs(_Strict):
    """What a tier may extract of the model's distribution.

    ``enabled: false`` refuses logprobs outright; otherwise ``top_k`` caps the alternatives per
    token, ``decimals`` rounds every value, and ``noise`` adds Gaussian noise of that standard
    deviation (values stay ≤ 0)."""

    enabled: bool = True
    top_k: int | None = Field(None, ge=0, le=20)
    decimals: int | None = Field(None, ge=0, le=8)
    noise: float | None = Field(None, gt=0)


class Tier(_Strict):
    """Limits and extraction controls shared by every key of one tier."""

    requests_per_minute: int | None = Field(None, ge=1)
    input_tokens_per_minute: int | None = Field(None, ge=1)
    output_tokens_per_minute: int | None = Field(None, ge=1)
    tokens_per_day: int | None = Field(None, ge=1)
    concurrent: int | None = Field(None, ge=1)
    logprobs: Logprobs = Logprobs()
    max_n: int = Field(1, ge=1)
    max_tokens: int = Field(1024, ge=1)
    models: list[str] = []  # empty: every model the upstream serves
    system_notice: str | None = None
    allow_logit_bias: bool = True  # never together with logprobs, whatever this says
    blocked: bool = False

    @field_validator("logprobs", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as False and `on` as True.
        if value in (False, "off", "none"):
            return {"enabled": False}
        if value in (True, "on", "full"):
            return {}
        return value


class Terms(_Strict):
    """The terms of use each key accepts when it is created; responses name the version."""

    version: str
    text: str = ""


class Audit(_Strict):
    """``bodies: hashes`` keeps only sha256 hashes of prompts and messages in the audit log."""

    bodies: Literal["full", "hashes"] = "full"


ACTIONS = ("log", "flag", "tighten", "strip_logprobs", "watermark", "block")


class Step(_Strict):
    """One rung of the detector's ladder: from score ``at`` on, ``action`` applies.

    ``log`` and ``flag`` change no answer (the audit reason says so); ``tighten`` multiplies the
    tier's per-minute and per-day limits by ``factor``; ``strip_logprobs`` answers as the tier
    would with logprobs off; ``watermark`` asks the upstream to watermark the key's answers
    (header ``x-retort-watermark: on``, which ``retort serve --watermark KEY
    --watermark-on-request`` honours); ``block`` refuses every request, for ``minutes`` or
    (left out) until an operator clears the key."""

    at: float = Field(ge=0, le=1)
    action: str
    factor: float | None = Field(None, gt=0, lt=1)
    minutes: float | None = Field(None, gt=0)

    @field_validator("action")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ACTIONS:
            near = difflib.get_close_matches(value, ACTIONS, n=1)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise ValueError(f"unknown action '{value}'{hint} (one of {', '.join(ACTIONS)})")
        return value

    @model_validator(mode="after")
    def _arguments(self) -> Step:
        if self.action == "tighten" and self.factor is None:
            raise ValueError("tighten needs a factor (0 < factor < 1), e.g. factor: 0.25")
        if self.action != "tighten" and self.factor is not None:
            raise ValueError(f"factor applies to tighten only, not {self.action}")
        if self.action != "block" and self.minutes is not None:
            raise ValueError(f"minutes applies to block only, not {self.action}")
        return self


# Watching only: acting on a customer's key is the operator's explicit choice in the policy.
# The packaged weights put their operating point (≤ 1 % of the simulator's benign keys) at 0.5.
DEFAULT_LADDER = (Step(at=0.3, action="log"), Step(at=0.5, action="flag"))


class Detector(_Strict):
    """The extraction detector online: per-key features, a score every ``score_every``
    requests once a key has ``min_requests``, and the ladder's action for the score reached.

    ``embedder`` feeds the topical, PRADA and window features, off the request path: ``hash``
    (default: character n-gram hashing, microseconds a prompt, no model to load), ``minilm``
    (all-MiniLM-L6-v2: better topics, loads torch into the gateway) or ``none``. ``baseline``
    is benign traffic's embeddings (``features.window.Reference.save``) for the window test;
    ``weights`` a fitted weights file (default: the packaged one). Relative paths are read
    from the policy file's folder."""

    enabled: bool = False
    score_every: int = Field(10, ge=1)
    min_requests: int = Field(30, ge=1)
    embedder: Literal["hash", "minilm", "none"] = "hash"
    baseline: Path | None = None
    weights: Path | None = None
    # Keys whose windows are kept, least recent dropped (their levels stay). A full window costs
    # about 1 MB today (mostly template signatures) plus 256 × the embedding dim × 4 bytes.
    max_keys: int = Field(10_000, ge=1)
    ladder: tuple[Step, ...] = DEFAULT_LADDER

    @model_validator(mode="after")
    def _ordered(self) -> Detector:
        ats = [s.at for s in self.ladder]
        for i in range(1, len(ats)):
            if ats[i] <= ats[i - 1]:
                raise ValueError(
                    f"ladder thresholds must rise: step {i} has at {ats[i]} after {ats[i - 1]}"
                )
        if self.baseline is not None and self.embedder == "none":
            raise ValueError("a baseline needs an embedder (hash or minilm), not none")
        return self


class Policy(_Strict):
    """A whole guard.yaml."""

    tiers: dict[str, Tier] = Field(min_length=1)
    terms: Terms | None = None
    audit: Audit = Audit()
    upstream_timeout_s: float = Field(120.0, gt=0)
    detector: Detector = Detector()

    def tier(self, name: str) -> Tier:
        """The tier called ``name``; a ConfigError naming the known ones otherwise."""
        if name not in self.tiers:
            raise ConfigError(f"unknown tier '{name}'; the policy has {sorted(self.tiers)}")
        return self.tiers[name]


_MODELS: dict[str, type[BaseModel]] = {
    "": Policy,
    "tiers.*": Tier,
    "tiers.*.logprobs": Logprobs,
    "terms": Terms,
    "audit": Audit,
    "detector": Detector,
    "detector.ladder.*": Step,
}


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; every mistake becomes a one-line ConfigError."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such policy file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'tiers'")
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt key also makes its real spelling "missing": name the misspelling.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        raise ConfigError(f"{path}: {_explain(first)}") from exc
    return _resolve_paths(policy, path.parent)


def _resolve_paths(policy: Policy, folder: Path) -> Policy:
    """The detector's files, read relative to the policy file rather than the working dir."""
    found = {
        name: folder / value
        for name in ("baseline", "weights")
        if (value := getattr(policy.detector, name)) is not None and not value.is_absolute()
    }
    if not found:
        return policy
    return policy.model_copy(update={"detector": policy.detector.model_copy(update=found)})


def _explain(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"])
    if error["type"] != "extra_forbidden":
        message = error["msg"].removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    # Tier names and list positions are wildcards in _MODELS.
    parent = ".".join(
        "*" if (i == 1 and error["loc"][0] == "tiers") or isinstance(p, int) else str(p)
        for i, p in enumerate(error["loc"][:-1])
    )
    model = _MODELS.get(parent)
    key = str(error["loc"][-1])
    valid = list(model.model_fields) if model else []
    near = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean '{near[0]}'?" if near else f"; valid keys: {', '.join(valid)}"
    return f"{where}: unknown key '{key}'{hint}"
