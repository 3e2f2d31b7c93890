"""The detector's ladder: the policy section's validation, what each step does to a tier, and
the online detector's levels on hand-made traffic with known scores (escalation at the
predicted request, monotone, timed blocks running out, operator overrides, restore, LRU).

The scorer here is built in the test (two features, known weights), so the expected scores
are closed forms and later refits of the packaged weights.json cannot move them."""

from __future__ import annotations

import math

import pytest

from retort.errors import ConfigError
from retort.guard.detect.ladder import (
    OVERRIDE_FACTOR,
    TierCache,
    check_override_level,
    effect,
    override_effect,
    step_for,
)
from retort.guard.detect.model import Scorer, Weight
from retort.guard.detect.online import EXPIRED, OnlineDetector
from retort.guard.detect.request import Request
from retort.guard.keys import Override
from retort.guard.policy import Detector, Step, Tier, load_policy

LADDER = """
tiers: {pro: {requests_per_minute: 100, tokens_per_day: 1000, concurrent: 3}}
detector:
  enabled: true
  ladder:
"""


def policy_with(tmp_path, steps: str):
    path = tmp_path / "guard.yaml"
    path.write_text(LADDER + steps)
    return load_policy(path)


def refusal(tmp_path, steps: str) -> str:
    with pytest.raises(ConfigError) as caught:
        policy_with(tmp_path, steps)
    return str(caught.value)


def test_detector_is_off_by_default_and_existing_policies_load_unchanged(tmp_path):
    path = tmp_path / "guard.yaml"
    path.write_text("tiers: {free: {}}\n")
    detector = load_policy(path).detector
    assert detector.enabled is False
    assert (detector.score_every, detector.min_requests, detector.embedder) == (10, 30, "hash")
    assert [s.action for s in detector.ladder] == ["log", "flag"]  # watching only


def test_ladder_must_rise(tmp_path):
    message = refusal(tmp_path, "    - {at: 0.8, action: flag}\n    - {at: 0.8, action: block}\n")
    assert "detector: ladder thresholds must rise: step 1 has at 0.8 after 0.8" in message


def test_unknown_action_is_named_with_its_nearest_spelling(tmp_path):
    message = refusal(tmp_path, "    - {at: 0.9, action: blok}\n")
    assert "detector.ladder.0.action: unknown action 'blok'; did you mean 'block'?" in message


def test_watermark_is_a_step_that_keeps_the_restrictions_below_it():
    ladder = (
        Step(at=0.5, action="strip_logprobs"),
        Step(at=0.8, action="watermark"),
        Step(at=0.9, action="block"),
    )
    marked = effect(ladder, 1, 0.85, ("asks logprobs",))
    assert marked.watermark and marked.strip and not marked.blocked
    assert marked.note == "detector watermark: score 0.85: asks logprobs"
    assert not effect(ladder, 0, 0.6).watermark
    assert override_effect(ladder, "watermark", None, "op").watermark
    assert override_effect((), "watermark", None, "op").watermark  # a ladder without the step


def test_step_arguments_belong_to_their_action(tmp_path):
    assert "tighten needs a factor" in refusal(tmp_path, "    - {at: 0.5, action: tighten}\n")
    assert "factor applies to tighten only" in refusal(
        tmp_path, "    - {at: 0.5, action: block, factor: 0.5}\n"
    )
    assert "minutes applies to block only" in refusal(
        tmp_path, "    - {at: 0.5, action: flag, minutes: 5}\n"
    )
    assert "detector.ladder.0.factor" in refusal(
        tmp_path, "    - {at: 0.5, action: tighten, factor: 1.5}\n"
    )
    misspelt = refusal(tmp_path, "    - {at: 0.5, action: tighten, factr: 0.5}\n")
    assert "detector.ladder.0.factr: unknown key 'factr'; did you mean 'factor'?" in misspelt


def test_detector_paths_are_read_from_the_policy_folder(tmp_path):
    path = tmp_path / "guard.yaml"
    path.write_text("tiers: {free: {}}\ndetector: {weights: w.json, baseline: /abs/b.npz}\n")
    detector = load_policy(path).detector
    assert detector.weights == tmp_path / "w.json"
    assert str(detector.baseline) == "/abs/b.npz"


def test_steps_keep_the_restrictions_below_them():
    ladder = (
        Step(at=0.5, action="tighten", factor=0.5),
        Step(at=0.7, action="tighten", factor=0.2),
        Step(at=0.8, action="strip_logprobs"),
        Step(at=0.9, action="block", minutes=5),
    )
    assert [step_for(ladder, s) for s in (0.1, 0.5, 0.75, 0.85, 0.99)] == [-1, 0, 1, 2, 3]
    stripped = effect(ladder, 2, 0.85, ("asks logprobs",))
    assert (stripped.factor, stripped.strip, stripped.blocked) == (0.2, True, False)
    assert stripped.note == "detector strip_logprobs ×0.2: score 0.85: asks logprobs"
    assert effect(ladder, 3, 0.95).blocked and effect(ladder, -1, 0.1).action == "none"
    pinned = override_effect(ladder, "tighten", 99.0, "alice")
    assert (pinned.factor, pinned.strip, pinned.until) == (0.2, False, None)
    assert override_effect(ladder, "block", 99.0, "alice").until == 99.0
    # An action the ladder lacks applies alone (a tighten at the default factor).
    assert override_effect(ladder[:1], "strip_logprobs", None, "a").strip
    assert override_effect(ladder[1:], "tighten", None, "a").factor == 0.2
    assert override_effect(ladder[2:], "tighten", None, "a").factor == OVERRIDE_FACTOR


def test_derived_tier_scales_volume_limits_not_concurrency():
    tier = Tier(requests_per_minute=100, tokens_per_day=1000, concurrent=3)
    cache = TierCache()
    derived = cache.derive(tier, 0.25, True)
    assert (derived.requests_per_minute, derived.tokens_per_day) == (25, 250)
    assert derived.concurrent == 3 and derived.logprobs.enabled is False
    assert cache.derive(tier, 0.25, True) is derived  # made once, not per request
    assert cache.derive(tier, 0.001, False).requests_per_minute == 1  # never 0


def test_override_levels_are_checked():
    assert check_override_level("auto") == "auto"
    assert check_override_level("watermark") == "watermark"
    with pytest.raises(ConfigError, match="did you mean 'tighten'"):
        check_override_level("tigthen")


# --- the online detector on hand-made traffic ---------------------------------------------------

BIAS, W = -4.0, 5.0


def scorer() -> Scorer:
    """logit = -4 + 5 × logprobs share + 5 × chain-of-thought share."""
    one = Weight(mean=0.0, scale=1.0, weight=W)
    return Scorer({"sweeps.logprobs_share": one, "elicit.cot_share": one}, BIAS, 0.5)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


CONFIG = Detector(
    enabled=True,
    score_every=4,
    min_requests=8,
    embedder="none",
    ladder=(
        Step(at=0.5, action="log"),
        Step(at=0.7, action="tighten", factor=0.5),
        Step(at=0.9, action="block", minutes=10),
    ),
)


def ask(i: int, key: str = "k", cot: bool = False, logprobs: bool = True) -> Request:
    text = f"What is {i} plus {i}?" + (" Think step by step." if cot else "")
    params = {"logprobs": True, "top_logprobs": 2} if logprobs else {}
    return Request(ts=1000.0 + i, key=key, text=text, params=params)


def test_levels_rise_at_the_predicted_requests_and_never_fall_on_their_own():
    changes = []
    detector = OnlineDetector(CONFIG, scorer(), sink=changes.append)
    for i in range(8):  # scored first at the 8th: every request asks logprobs, none CoT
        assert detector.level("k", 1000.0 + i) is None
        detector.observe(ask(i))
    assert [(c.level, round(c.score, 6)) for c in changes] == [("tighten", round(sigmoid(1), 6))]
    assert changes[0].reasons[0]["feature"] == "sweeps.logprobs_share"
    assert changes[0].reasons[0]["words"] == "100% of requests ask for token log-probabilities"
    tightened = detector.level("k", 1008.0)
    assert (tightened.action, tightened.factor, tightened.blocked) == ("tighten", 0.5, False)
    for i in range(8, 12):  # 4 of 12 ask CoT at the next score: -4 + 5 + 5/3
        detector.observe(ask(i, cot=True))
    assert changes[-1].level == "block"
    assert changes[-1].score == pytest.approx(sigmoid(BIAS + W + W / 3))
    blocked = detector.level("k", 1011.0 + 599)
    assert blocked.blocked and blocked.until == 1011.0 + 600
    for i in range(12, 40):  # benign-looking traffic: the score falls, the level does not
        detector.observe(ask(i, logprobs=False))
    assert detector.verdict("k").score < 0.5
    assert len(changes) == 2 and detector.level("k", 1011.0 + 599).blocked


def test_a_timed_block_falls_to_the_step_below_and_is_recorded():
    changes = []
    detector = OnlineDetector(CONFIG, scorer(), sink=changes.append)
    for i in range(8):
        detector.observe(ask(i, cot=True))  # -4 + 10: straight to block
    assert [c.level for c in changes] == ["block"]
    after = detector.level("k", 1007.0 + 600)
    assert after.action == "tighten" and not after.blocked
    assert changes[-1].level == "tighten" and changes[-1].reasons == EXPIRED
    for i in range(8, 12):  # still at it: blocked again at the next score
        detector.observe(ask(i, cot=True))
    assert [c.level for c in changes] == ["block", "tighten", "block"]


def test_operator_overrides_pin_or_clear_the_level():
    detector = OnlineDetector(CONFIG, scorer())
    for i in range(8):
        detector.observe(ask(i, cot=True))
    assert detector.level("k", 1010.0).blocked

    def override(level: str, ts: float, until: float | None = None) -> Override:
        return Override(1, ts, "k", level, until, "alice", "checked")

    pinned = detector.level("k", 1010.0, override("none", 1009.0, until=1100.0))
    assert pinned.action == "none" and pinned.by == "alice"
    assert "operator override by alice" in pinned.note
    # Once the pin lapses the automatic level was cleared: the detector starts from none.
    assert detector.level("k", 1200.0, override("none", 1009.0, until=1100.0)) is None
    assert detector.level("k", 1200.0, override("block", 1201.0)).blocked


def test_restore_keeps_levels_a_restart_would_lose():
    from retort.guard.detect.online import Change

    detector = OnlineDetector(CONFIG, scorer())
    kept = detector.restore(
        [
            Change(2000.0, "a", 0.95, "block", ({"words": "w"},)),
            Change(2000.0, "b", 0.75, "tighten", ()),
            Change(2000.0, "c", 0.95, "strip_logprobs", ()),  # no such step any more
        ]
    )
    assert kept == 2
    assert detector.level("a", 2100.0).until == 2600.0
    assert detector.level("b", 2100.0).factor == 0.5 and detector.level("c", 2100.0) is None


def test_keys_dropped_from_the_lru_keep_their_level():
    detector = OnlineDetector(CONFIG.model_copy(update={"max_keys": 2}), scorer())
    for i in range(8):
        detector.observe(ask(i, key="bad", cot=True))
    for key in ("x", "y", "z"):
        detector.observe(ask(0, key=key))
    assert detector.verdict("bad") is None  # its window is gone
    assert detector.level("bad", 1010.0).blocked
