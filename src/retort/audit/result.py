"""An audit's verdict: the numbers, what they do and do not show, and the JSON report."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from retort.audit.pairs import Candidates
from retort.audit.scoring import KeyScore, NullControl, combined_p_value, null_control, score_key
from retort.errors import ConfigError
from retort.watermark.keys import Key

EVIDENCE = 1e-3  # below this p-value the statement calls the result evidence
FEW_TOKENS = 200  # fewer scored tokens than this: say that the test had little to go on


@dataclass(frozen=True)
class AuditResult:
    """The outcome of ``audit_reading``, ``audit_api`` or ``audit_sampled``.

    Attributes:
        mode: ``reading`` (teacher-forced top-1 predictions), ``api`` (samples from a
            server) or ``sample`` (samples from a local model).
        suspect: the model audited (spec, URL or name).
        p_value: the smallest key's p-value times the number of keys (Bonferroni).
        scored_tokens: distinct pairs scored under the key that gave ``p_value``.
        keys: each key's own test.
        texts: sequences read (reading) or completions pooled (api, sampling).
        positions: positions with a full watermark context, before any filter.
        excluded: positions each filter removed (input, listed, frequent).
        repeats: positions whose (context, token) pair was already counted.
        unmapped: positions skipped for an id the tokenizer does not have.
        null: the null-key control, when asked for.
        settings: what the run was given (filters, lengths, sampling), for the record.
    """

    mode: str
    suspect: str
    p_value: float
    scored_tokens: int
    keys: list[KeyScore]
    texts: int
    positions: int
    excluded: dict[str, int]
    repeats: int
    unmapped: int = 0
    null: NullControl | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def statement(self) -> str:
        """What the result does and does not show, in plain words."""
        return statement(self)

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["statement"] = self.statement
        return record


def verdict(
    mode: str,
    suspect: str,
    candidates: Candidates,
    keys: list[Key],
    *,
    null_trials: int = 0,
    null_seed: int | None = None,
    settings: dict[str, Any] | None = None,
) -> AuditResult:
    """Score ``candidates`` under every key (and the null keys) into an :class:`AuditResult`."""
    scores = [score_key(candidates, key) for key in keys]
    p_value, best = combined_p_value(scores)
    control = (
        null_control(candidates, keys, null_trials, p_value, null_seed) if null_trials else None
    )
    return AuditResult(
        mode=mode,
        suspect=suspect,
        p_value=p_value,
        scored_tokens=best.scored_tokens,
        keys=scores,
        texts=candidates.texts,
        positions=candidates.positions,
        excluded=dict(candidates.excluded),
        repeats=candidates.repeats,
        unmapped=candidates.unmapped,
        null=control,
        settings=settings or {},
    )


def statement(result: AuditResult) -> str:
    """The plain-words reading of ``result`` (also in the JSON report as ``statement``)."""
    keys = len(result.keys)
    over = f"{keys} keys, Bonferroni" if keys > 1 else "1 key"
    lines = [f"p = {result.p_value:.3g} over {result.scored_tokens} scored tokens ({over})."]
    if result.p_value < EVIDENCE:
        lines.append(
            "Evidence that the suspect was trained on text watermarked with this key, or "
            "memorized such text: a model that never learned from it gives a p-value this "
            f"small with probability at most {result.p_value:.3g}."
        )
    else:
        lines.append(
            "No evidence of training on text watermarked with this key; this is not evidence "
            "of absence: too few audit tokens, a small watermarked share of the training data, "
            "or a paraphrase of the watermarked text before training are known to hide it."
        )
    if result.scored_tokens < FEW_TOKENS:
        lines.append(
            f"Only {result.scored_tokens} tokens were scored: audit more text for a stronger test."
        )
    if result.null is not None:
        control = result.null
        lines.append(
            f"Null control: {control.trials} random keys, KS test of their p-values against "
            f"uniform p = {control.ks_p_value:.3g}; the audit's p-value ranks at "
            f"{control.empirical_p_value:.3g} among them."
        )
        if control.ks_p_value < EVIDENCE:
            lines.append(
                "Warning: the random keys' p-values are not uniform, so the test is "
                "miscalibrated on this corpus (repeated or copied text); do not rely on the "
                "p-value above."
            )
    lines.append(
        "The audit is statistical evidence, not proof: the p-value is exact only if the key's "
        "PRF behaves as random, and whoever holds the key can also forge the signal."
    )
    return " ".join(lines)


def write_report(result: AuditResult, path: Path) -> Path:
    """The report as JSON at ``path``, written beside it and renamed into place."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigError(f"--out {path}: folder {path.parent} does not exist; create it first")
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        partial.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
