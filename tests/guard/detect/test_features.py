"""The six cheap feature families on hand-made request sequences whose values can be worked
out by hand; evict undoes add exactly; the same requests give the same values in another
process."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import subprocess
import sys

import pytest

from retort.guard.detect.features import cheap_families
from retort.guard.detect.features.elicit import Elicitation, elicits
from retort.guard.detect.features.sweeps import Sweeps
from retort.guard.detect.features.templates import ZDICT_PROMPTS, Templates
from retort.guard.detect.features.timing import Timing
from retort.guard.detect.features.turns import Turns, refers_back
from retort.guard.detect.features.volume import Volume
from retort.guard.detect.request import Request
from retort.guard.detect.state import KeyState

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC: hour 0


def req(ts: float = T0, text: str = "hello there", **kw) -> Request:
    return Request(ts=ts, key="k", text=text, **kw)


def fed(family, requests):
    for r in requests:
        family.add(r)
    return family.values()


def neutral(family) -> dict[str, float]:
    return {f.name: f.neutral for f in family.features}


@pytest.mark.parametrize("cls", [Volume, Timing, Turns, Sweeps, Templates, Elicitation])
def test_a_family_reports_its_named_features_and_is_neutral_below_eight(cls):
    family = cls()
    names = {f.name for f in family.features}
    assert all(n.startswith(family.features[0].name.split(".")[0] + ".") for n in names)
    assert all(f.describe(0.5) for f in family.features)  # words format with a value
    seven = [req(T0 + 10 * i, f"prompt number {i} step by step", prompt_tokens=5) for i in range(7)]
    assert fed(family, seven) == neutral(family)
    family.add(req(T0 + 70, "one more prompt", prompt_tokens=5))
    assert set(family.values()) == names


# --- volume ---


def test_requests_per_hour_counts_gaps_over_the_span():
    # 9 requests 10 minutes apart: 8 gaps in 80 minutes = 6 an hour
    values = fed(Volume(), [req(T0 + 600 * i) for i in range(9)])
    assert values["volume.requests_per_hour"] == pytest.approx(6.0)


def test_a_burst_is_measured_over_the_floored_span():
    # 8 requests within one second: 7 gaps over the 60 s floor = 420 an hour
    values = fed(Volume(), [req(T0 + 0.1 * i) for i in range(8)])
    assert values["volume.requests_per_hour"] == pytest.approx(420.0)


def test_token_ratio_and_mean_answer_use_requests_with_usage():
    rs = [req(T0 + i, prompt_tokens=10, completion_tokens=40) for i in range(8)]
    rs.append(req(T0 + 9))  # refused before the upstream: no usage, not counted
    values = fed(Volume(), rs)
    assert values["volume.output_input_ratio"] == pytest.approx(4.0)
    assert values["volume.mean_completion_tokens"] == pytest.approx(40.0)


def test_refused_share_counts_429_and_refusing_decisions():
    rs = [req(T0 + i) for i in range(6)]
    rs += [req(T0 + 6, status=429), req(T0 + 7, status=200, decision="blocked")]
    assert fed(Volume(), rs)["volume.refused_share"] == pytest.approx(0.25)


# --- timing ---


def test_equal_gaps_are_clockwork():
    values = fed(Timing(), [req(T0 + 10 * i) for i in range(8)])
    assert values["timing.interarrival_cv"] == 0.0
    assert values["timing.burstiness"] == -1.0


def test_gaps_of_10_and_30_have_cv_one_half():
    # gaps 10, 30, 10, 30, ...: mean 20, σ 10 → CV 0.5, burstiness (10 − 20)/(10 + 20)
    ts, stamps = T0, []
    for i in range(9):
        stamps.append(ts)
        ts += 10 if i % 2 == 0 else 30
    values = fed(Timing(), [req(t) for t in stamps])
    assert values["timing.interarrival_cv"] == pytest.approx(0.5)
    assert values["timing.burstiness"] == pytest.approx(-1 / 3)


def test_one_request_an_hour_round_the_clock_is_uniform():
    values = fed(Timing(), [req(T0 + 3600 * h) for h in range(24)])
    assert values["timing.hour_uniformity"] == pytest.approx(1.0)


def test_two_busy_hours_a_day_have_the_entropy_of_two_bins():
    rs = [req(T0 + 86_400 * day + 3600 * hour) for day in range(6) for hour in (9, 10)]
    values = fed(Timing(), rs)
    assert values["timing.hour_uniformity"] == pytest.approx(math.log(2) / math.log(24))


def test_hour_uniformity_is_neutral_under_six_hours():
    values = fed(Timing(), [req(T0 + 600 * i) for i in range(30)])  # 4 h 50 min
    assert values["timing.hour_uniformity"] == Timing.features[1].neutral


# --- turns ---


def test_single_turn_share_over_generation_requests():
    answer = ("Quicksort picks a pivot and partitions.",)
    rs = [req(T0 + i) for i in range(6)]
    rs += [req(T0 + 6 + i, "and then?", user_turns=2, history=answer) for i in range(2)]
    rs.append(req(T0 + 9, "", endpoint="/v1/models"))  # not a generation request
    assert fed(Turns(), rs)["turns.single_turn_share"] == pytest.approx(0.75)


def test_follow_ups_that_refer_back_are_counted_over_multi_turn_requests():
    answer = ("Quicksort picks a pivot element and partitions the array around it.",)
    multi = [
        req(T0, "You said the pivot matters; why?", user_turns=2, history=answer),
        req(
            T0 + 1, "Does the pivot choice change how it partitions?", user_turns=2, history=answer
        ),
        req(T0 + 2, "Name three rivers in Africa.", user_turns=2, history=answer),
        req(T0 + 3, "Write a haiku about autumn leaves.", user_turns=2, history=answer),
    ]
    singles = [req(T0 + 4 + i) for i in range(4)]
    values = fed(Turns(), multi + singles)
    assert values["turns.followup_reference_share"] == pytest.approx(0.5)
    assert values["turns.single_turn_share"] == pytest.approx(0.5)


def test_refers_back_by_phrase_or_by_shared_words():
    answer = "Use a context manager so the file closes even when parsing raises."
    assert refers_back("Can you elaborate?", answer)
    assert refers_back("why does the context manager close the file", answer)
    assert not refers_back("What is the capital of Peru?", answer)


# --- sweeps ---


def test_half_of_the_requests_asking_logprobs_reads_one_half():
    rs = [req(T0 + i, f"q{i}") for i in range(4)]
    rs += [req(T0 + 4 + i, f"p{i}", params={"logprobs": True, "top_logprobs": 5}) for i in range(3)]
    rs.append(req(T0 + 7, "c", endpoint="/v1/completions", params={"logprobs": 3}))
    values = fed(Sweeps(), rs)
    assert values["sweeps.logprobs_share"] == pytest.approx(0.5)
    assert values["sweeps.top_logprobs_mean"] == pytest.approx((5 * 3 + 3) / 4)


def test_n_seed_and_temperatures():
    temps = [None, 1.0, 0.5, 0.5, 0.0, None, None, None]  # absent reads as 1.0
    rs = []
    for i, t in enumerate(temps):
        params = {"n": i % 4 + 1}  # 1, 2, 3, 4, 1, 2, 3, 4
        if t is not None:
            params["temperature"] = t
        if i < 2:
            params["seed"] = i
        rs.append(req(T0 + i, f"q{i}", params=params))
    values = fed(Sweeps(), rs)
    assert values["sweeps.n_mean"] == pytest.approx(2.5)
    assert values["sweeps.seed_share"] == pytest.approx(0.25)
    assert values["sweeps.temperature_distinct"] == 3.0


def test_one_prompt_at_four_seeds_is_three_resamples():
    rs = [req(T0 + i, "same prompt", params={"seed": i}) for i in range(4)]
    rs += [req(T0 + 4 + i, f"other {i}") for i in range(3)]
    rs.append(req(T0 + 7, "other 0"))  # an exact repeat at the same setting: not a resample
    assert fed(Sweeps(), rs)["sweeps.resample_share"] == pytest.approx(3 / 8)


def test_ill_typed_parameters_read_as_defaults():
    bad = {"logprobs": "yes", "top_logprobs": 2.5, "n": "3", "seed": 1.5, "temperature": "hot"}
    values = fed(Sweeps(), [req(T0 + i, params=bad) for i in range(8)])
    assert values["sweeps.logprobs_share"] == 0.0
    assert values["sweeps.n_mean"] == 1.0
    assert values["sweeps.seed_share"] == 0.0
    assert values["sweeps.temperature_distinct"] == 1.0


# --- templates ---

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]
UNRELATED = [
    "Which rivers flow north across the Sahara during wet seasons?",
    "My sourdough starter smells like nail polish; is that bad?",
    "Quick poem: two lines on a cat watching rain.",
    "Convert 37 degrees Celsius into Kelvin for my lab notebook.",
    "Who won Wimbledon in 1987 and against whom?",
    "Suggest names for a grey kitten with white paws.",
    "Explain why my bike chain keeps slipping uphill.",
    "Draft an apology text for missing Jo's birthday dinner.",
]


def distinct_prompts(n: int) -> list[str]:
    # no 3 words in a row shared, no prefix or suffix shared, little for deflate to reuse
    return UNRELATED[:n]


def test_identical_prompts_are_all_duplicates_with_shared_ends():
    text = "Classify the sentiment of this product review as positive or negative please"
    values = fed(Templates(), [req(T0 + i, text) for i in range(8)])
    assert values["templates.near_duplicate_share"] == 1.0
    assert values["templates.shared_prefix_share"] == 1.0
    assert values["templates.shared_suffix_share"] == 1.0
    assert values["templates.compressibility"] > 0.7  # 7 of 8 nearly free given the one before


def test_half_duplicates_read_one_half_and_distinct_prompts_zero():
    texts = ["the very same long prompt about one thing and another thing"] * 4
    values = fed(Templates(), [req(T0 + i, t) for i, t in enumerate(texts + distinct_prompts(4))])
    assert values["templates.near_duplicate_share"] == 0.5
    assert values["templates.shared_prefix_share"] == 0.5
    distinct = fed(Templates(), [req(T0 + i, t) for i, t in enumerate(distinct_prompts(8))])
    assert distinct["templates.near_duplicate_share"] == 0.0
    assert distinct["templates.shared_prefix_share"] == 0.0
    assert distinct["templates.compressibility"] < 0.3


def test_a_filled_template_shares_prefix_and_suffix_and_is_near_duplicate():
    rs = [
        req(
            T0 + i,
            f"Summarize the following support ticket in one line: {w}. Be brief and use no lists.",
        )
        for i, w in enumerate(WORDS[:8])
    ]
    values = fed(Templates(), rs)
    assert values["templates.shared_prefix_share"] == 1.0
    assert values["templates.shared_suffix_share"] == 1.0
    assert values["templates.near_duplicate_share"] == 1.0  # Jaccard 9/13: candidates here


def test_hashed_bodies_count_exact_repeats_only():
    digest = "sha256:" + "ab" * 32
    rs = [req(T0 + i, digest, hashed=True) for i in range(4)]
    rs += [req(T0 + 4 + i, "sha256:" + f"{i:02x}" * 32, hashed=True) for i in range(4)]
    values = fed(Templates(), rs)
    assert values["templates.near_duplicate_share"] == 0.5
    for name in ("compressibility", "shared_prefix_share", "shared_suffix_share"):
        assert values[f"templates.{name}"] == neutral(Templates())[f"templates.{name}"]


def test_fingerprints_are_stable_hashes_of_repeated_prefixes():
    family = Templates()
    for i in range(3):
        family.add(req(T0 + i, f"Translate into French the sentence number {i} of the list"))
    family.add(req(T0 + 3, "something else entirely that nobody else sends at all"))
    prefix = hashlib.sha256(b"p:translate into french the sentence").hexdigest()[:16]
    assert family.fingerprints(min_count=3) == {"p:" + prefix}
    assert family.fingerprints(min_count=4) == set()


# --- elicitation ---


def test_cot_and_structured_output_shares():
    rs = [
        req(T0, "Solve 2x + 3 = 7 step by step."),
        req(T0 + 1, "<think> then answer: what is 17 * 23?"),
        req(T0 + 2, "What is the boiling point of water?", system="Explain your reasoning."),
        req(T0 + 3, "Walk me through how TCP handshakes work."),
        req(T0 + 4, 'Respond in JSON with fields "reasoning" and "answer": is 91 prime?'),
        req(T0 + 5, "Is 97 prime?", params={"response_format": {"type": "json_object"}}),
        req(T0 + 6, "I took a step back and went for a walk through the park."),
        req(T0 + 7, "Recommend a good book about gardening."),
    ]
    values = fed(Elicitation(), rs)
    assert values["elicit.cot_share"] == pytest.approx(4 / 8)
    assert values["elicit.structured_output_share"] == pytest.approx(2 / 8)


def test_phrases_match_whatever_the_case():
    assert elicits(req(text="Let's THINK Step-By-Step")) == (True, False)
    assert elicits(req(text="Return the result AS VALID JSON.")) == (False, True)


def test_hashed_prompts_leave_elicitation_neutral():
    rs = [req(T0 + i, "sha256:" + f"{i:02x}" * 32, hashed=True) for i in range(10)]
    assert fed(Elicitation(), rs) == neutral(Elicitation())


# --- the window ---


def mixed_requests(n: int, seed: int = 7) -> list[Request]:
    """A varied key: templates, resamples, multi-turn, refusals, logprobs, hashed bodies."""
    rng = random.Random(seed)
    out, ts = [], T0
    for _ in range(n):
        ts += rng.choice([0.5, 2.0, 30.0, 900.0])
        kind = rng.randrange(5)
        if kind == 0:
            slot = " ".join(rng.sample(WORDS, 2))
            text = f"Rate this review from 1 to 5: {slot}. Answer with the number only."
        elif kind == 1:
            text = "Explain step by step: " + " ".join(rng.sample(WORDS, 6))
        elif kind == 2:
            text = "sha256:" + f"{rng.randrange(4):02x}" * 32
        elif kind == 3:
            text = " ".join(rng.sample(WORDS, rng.randrange(1, len(WORDS))))
        else:
            text = "Reply in JSON: " + " ".join(rng.sample(WORDS, 4))
        history = ("Earlier answer about " + " ".join(rng.sample(WORDS, 5)),) if kind == 3 else ()
        params = {"seed": rng.randrange(3), "temperature": rng.choice([0.0, 0.7])}
        if kind == 4:
            params.update(logprobs=True, top_logprobs=rng.randrange(1, 20), n=rng.randrange(1, 4))
        out.append(
            Request(
                ts=ts,
                key="k",
                text=text,
                hashed=kind == 2,
                user_turns=1 + len(history),
                history=history,
                prompt_tokens=rng.randrange(5, 300),
                completion_tokens=rng.randrange(0, 900),
                status=rng.choice([200, 200, 429]),
                params=params,
            )
        )
    return out


def state_values(requests: list[Request]) -> tuple[dict[str, float], set[str]]:
    state = KeyState("k", cheap_families(), window=256)
    for r in requests:
        state.add(r)
    templates = next(f for f in state.families if isinstance(f, Templates))
    return state.values(), templates.fingerprints(min_count=2)


def test_evicting_leaves_what_a_fresh_window_of_the_last_256_holds():
    requests = mixed_requests(300)
    (through, prints), (fresh, fresh_prints) = state_values(requests), state_values(requests[-256:])
    assert prints == fresh_prints
    # compressibility alone reads the few prompts before each one, even past the window
    assert {k: v for k, v in through.items() if k != "templates.compressibility"} == {
        k: v for k, v in fresh.items() if k != "templates.compressibility"
    }
    start, readable = len(requests) - 256, 0  # back to the ZDICT_PROMPTS readable before
    while readable < ZDICT_PROMPTS:
        start -= 1
        readable += not requests[start].hashed
    primed, _ = state_values(requests[start:])
    assert through == primed
    assert through != dict.fromkeys(through, 0.0)  # the values are not all trivially equal


def test_same_requests_same_values_in_another_process():
    requests = mixed_requests(120, seed=3)
    here = state_values(requests)[0]
    code = (
        "import json, sys; sys.path.insert(0, 'tests/guard/detect');"
        "from test_features import mixed_requests, state_values;"
        "print(json.dumps(state_values(mixed_requests(120, seed=3))[0]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # str/bytes hashing differs there
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, check=True
    )
    assert json.loads(out.stdout) == here
