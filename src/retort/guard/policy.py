"""The policy file (guard.yaml): tiers, their limits and extraction controls, and the terms.

Strict like every retort config: an unknown key is an error naming the key, where it is, and
its nearest valid spelling.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class Policy(_Strict):
    """A whole guard.yaml."""

    tiers: dict[str, Tier] = Field(min_length=1)
    terms: Terms | None = None
    audit: Audit = Audit()
    upstream_timeout_s: float = Field(120.0, gt=0)

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
        return Policy.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt key also makes its real spelling "missing": name the misspelling.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        raise ConfigError(f"{path}: {_explain(first)}") from exc


def _explain(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"])
    if error["type"] != "extra_forbidden":
        return f"{where}: {error['msg']}"
    parent = ".".join(
        "*" if i == 1 and error["loc"][0] == "tiers" else str(p)
        for i, p in enumerate(error["loc"][:-1])
    )
    model = _MODELS.get(parent)
    key = str(error["loc"][-1])
    valid = list(model.model_fields) if model else []
    near = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean '{near[0]}'?" if near else f"; valid keys: {', '.join(valid)}"
    return f"{where}: unknown key '{key}'{hint}"
