"""The escalation ladder: which step a score reaches, what a step does to a key's tier, and how
a level reads in an audit reason.

Each step keeps the restrictions of the steps below it: a key at ``strip_logprobs`` above a
``tighten`` step is both tightened (the smallest factor reached) and stripped. ``block``
refuses while it is the key's step; a timed block falls back to the step below when it ends.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from retort.errors import ConfigError
from retort.guard.audit import EventRow
from retort.guard.keys import Override
from retort.guard.policy import ACTIONS, Step, Tier

NONE = "none"  # no step reached (or an operator pinned the key to no action)
AUTO = "auto"  # an override that hands the key back to the detector
OVERRIDE_LEVELS = (AUTO, NONE, *ACTIONS)
OVERRIDE_FACTOR = 0.5  # an operator's tighten on a ladder without a tighten step
LIMITS = ("requests_per_minute", "input_tokens_per_minute", "output_tokens_per_minute")


@dataclass(frozen=True)
class Effect:
    """What a key's level does to its next request, and the words its audit row carries."""

    action: str  # the step's action, or NONE
    score: float | None
    reasons: tuple[str, ...] = ()
    factor: float | None = None  # limits × factor (the smallest tighten reached)
    strip: bool = False  # answer as the tier would with logprobs off
    watermark: bool = False  # ask the upstream to watermark the answer
    blocked: bool = False
    until: float | None = None  # a timed block's end (unix s)
    by: str | None = None  # the operator, when an override set this level

    @property
    def changes_tier(self) -> bool:
        return self.factor is not None or self.strip

    @property
    def note(self) -> str:
        """``detector tighten ×0.25: score 0.83: asks logprobs on 100% of requests; ...``."""
        head = f"detector {self.action}"
        if self.factor is not None and not self.blocked:  # a block needs no factor
            head += f" ×{self.factor:g}"
        if self.by is not None:
            return f"{head}: operator override by {self.by}"
        return f"{head}: {describe(self.score, self.reasons)}"


def describe(score: float | None, reasons: Sequence[str]) -> str:
    """``score 0.83: 64% near-duplicate prompts; asks logprobs on every request``."""
    text = "score -" if score is None else f"score {score:.2f}"
    return f"{text}: {'; '.join(reasons)}" if reasons else text


def step_for(ladder: Sequence[Step], score: float) -> int:
    """The highest step ``score`` reaches; -1 below the first."""
    index = -1
    for i, step in enumerate(ladder):
        if score >= step.at:
            index = i
    return index


def effect(
    ladder: Sequence[Step],
    index: int,
    score: float | None,
    reasons: Sequence[str] = (),
    until: float | None = None,
    by: str | None = None,
) -> Effect:
    """The effect of standing at step ``index`` (-1: none) of ``ladder``."""
    if index < 0:
        return Effect(NONE, score, tuple(reasons), by=by)
    reached = ladder[: index + 1]
    factors = [s.factor for s in reached if s.action == "tighten" and s.factor is not None]
    return Effect(
        ladder[index].action,
        score,
        tuple(reasons),
        factor=min(factors) if factors else None,
        strip=any(s.action == "strip_logprobs" for s in reached),
        watermark=any(s.action == "watermark" for s in reached),
        blocked=ladder[index].action == "block",
        until=until,
        by=by,
    )


def override_effect(ladder: Sequence[Step], level: str, until: float | None, by: str) -> Effect:
    """The effect of an operator's ``level``: the ladder's highest step of that action (with
    the restrictions below it), or, when the ladder has none, that action alone (a tighten
    then uses ``OVERRIDE_FACTOR``). Never raises: it runs on the request path."""
    if level == NONE:
        return Effect(NONE, None, by=by)
    matches = [i for i, s in enumerate(ladder) if s.action == level]
    if matches:
        made = effect(ladder, matches[-1], None, by=by)
    else:
        made = Effect(
            level,
            None,
            factor=OVERRIDE_FACTOR if level == "tighten" else None,
            strip=level == "strip_logprobs",
            watermark=level == "watermark",
            blocked=level == "block",
            by=by,
        )
    return replace(made, until=until if made.blocked else None)


def check_override_level(level: str) -> str:
    """An override level as typed (``--level``), or a one-line ConfigError naming the fix."""
    if level not in OVERRIDE_LEVELS:
        near = difflib.get_close_matches(level, OVERRIDE_LEVELS, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise ConfigError(
            f"--level: unknown level '{level}'; {hint}one of {', '.join(OVERRIDE_LEVELS)}"
        )
    return level


def standing(events: Sequence[EventRow], override: Override | None, now: float) -> str:
    """How a key stands, read from the database as a gateway would: an override in force
    wins; an override made after the detector's last change cleared it. A timed block that
    ran out shows until the key's next request makes the gateway record it."""
    if override is not None and override.level != AUTO and override.in_force(now):
        return f"{override.level} (operator override by {override.by or '-'})"
    last = events[-1] if events else None
    if last is None or (override is not None and override.ts >= last.ts):
        return f"{NONE} (cleared by an operator)" if override is not None else NONE
    score = "-" if last.score is None else f"{last.score:.2f}"
    return f"{last.level} (detector, score {score})"


@dataclass
class TierCache:
    """Derived tiers (limits × factor, logprobs off), made once per tier and effect: the
    request path must not rebuild a pydantic model per request."""

    _made: dict[tuple[int, float | None, bool], tuple[Tier, Tier]] = field(default_factory=dict)

    def derive(self, tier: Tier, factor: float | None, strip: bool) -> Tier:
        """``tier`` with its per-minute and per-day limits × ``factor`` (at least 1) and, with
        ``strip``, logprobs off. ``concurrent`` is left alone: it bounds load, not volume."""
        slot = (id(tier), factor, strip)
        cached = self._made.get(slot)
        if cached is not None and cached[0] is tier:
            return cached[1]
        update: dict[str, Any] = {}
        if factor is not None:
            for name in (*LIMITS, "tokens_per_day"):
                limit = getattr(tier, name)
                if limit is not None:
                    update[name] = max(1, int(limit * factor))
        if strip:
            update["logprobs"] = tier.logprobs.model_copy(update={"enabled": False})
        derived = tier.model_copy(update=update)
        self._made[slot] = (tier, derived)
        return derived

    def clear(self) -> None:
        """Forget every derived tier (the policy was reloaded)."""
        self._made.clear()
