"""The simulator's traffic styles as data: name → how many keys, which tier and network, the
function that writes their requests and its parameters. The benchmark varies a style with
``dataclasses.replace(STYLES[name], params={...})`` and passes the table to ``simulate``.

A parameter written ``(low, high)`` is drawn per key (whole numbers when both ends are).
Benign: chat_user, coder, bursty_human, writer, tutor_student, rag_app, agent_app,
batch_customer, benchmark_run, eval_researcher, load_tester. Attack: template_sweep,
cot_harvest, coverage_crawl, label_harvest, hydra, mixed, slow_and_low. Each function's
docstring says what the style does; ``describe`` returns it.

The benign table holds a hard negative for every cheap feature family (long outputs: writer;
reasoning requests: tutor_student, eval_researcher; machine timing and JSON: agent_app,
batch_customer; sweeps: benchmark_run, eval_researcher), and the attackers vary (short labels:
label_harvest; person-paced cot_harvest and coverage_crawl keys; template_sweep keys rotating
many templates), so no single cheap family separates the two on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from retort.guard.detect.styles import apps, attack, benign
from retort.guard.detect.styles.traffic import KeyTraffic

Generate = Callable[[Sequence[KeyTraffic], Mapping[str, Any]], None]
# home: a household address or two of its own; corporate: some keys share an office NAT /24
# (a hard negative for address clustering); cloud: one or two server addresses; proxy: every
# request from any address of a few proxy /24s (a cluster's keys share theirs).
Network = Literal["home", "corporate", "cloud", "proxy"]


@dataclass(frozen=True)
class Style:
    """One kind of traffic: ``keys`` at scale 1, made in groups of ``group`` keys (a cluster
    acting together when above one), each key's tier drawn from ``tiers`` (weights)."""

    name: str
    label: Literal["benign", "attack"]
    keys: int
    generate: Generate
    tiers: Mapping[str, float]
    network: Network
    group: int = 1
    params: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """What the style does, in one paragraph (its function's docstring)."""
        return " ".join((self.generate.__doc__ or "").split())


_CHAT = {
    "sessions_per_day": (1.0, 4.0),
    "turns": 5.0,  # mean turns a session
    "max_turns": 10,
    "think_s": 45.0,  # median seconds between an answer and the next turn
    "refer_back": 0.75,  # follow-ups that build on the previous answer
    "answer_words": (40, 160),
}

# Attackers whose script imitates a person: ``human_share`` of the keys send one request at a
# time, log-normal(σ) gaps around a median, and ``nights_off_share`` of those sleep.
_PERSON_PACED = {
    "human_share": 0.4,
    "human_gap_s": (20.0, 90.0),
    "sigma": 0.9,
    "nights_off_share": 0.5,
}

STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        Style("chat_user", "benign", 100, benign.chat_user, {"free": 0.6, "pro": 0.4},
              "corporate", params=_CHAT),
        Style("coder", "benign", 40, benign.coder, {"free": 0.3, "pro": 0.7}, "corporate",
              params={**_CHAT, "sessions_per_day": (1.0, 3.0), "turns": 4.0}),
        Style("bursty_human", "benign", 45, benign.bursty_human, {"free": 0.8, "pro": 0.2},
              "home", params={**_CHAT, "bursts_per_day": (0.3, 1.2), "burst_requests": (4, 20),
                              "gap_s": (4.0, 40.0), "retry_share": 0.15, "retries": (2, 30)}),
        Style("writer", "benign", 25, benign.writer, {"free": 0.4, "pro": 0.6}, "home",
              params={"sessions_per_day": (2.0, 5.0), "revise_share": 0.2,
                      "completion_tokens": (400, 1500), "read_s": 150.0}),
        Style("tutor_student", "benign", 25, benign.tutor_student, {"free": 0.8, "pro": 0.2},
              "home", params={**_CHAT, "sessions_per_day": (1.0, 3.0), "turns": 4.0,
                              "cot_first": 0.8, "cot_followup": 0.4,
                              "answer_words": (120, 400)}),
        Style("eval_researcher", "benign", 8, apps.eval_researcher,
              {"pro": 0.6, "partner": 0.4}, "cloud",
              params={"runs": (2, 4), "concurrency": (2, 8), "few_shot": 0.4,
                      "logprobs_share": 0.7, "completion_tokens": (60, 300)}),
        Style("agent_app", "benign", 12, apps.agent_app, {"pro": 0.7, "partner": 0.3},
              "cloud", params={"tasks_per_hour": (0.8, 3.0), "steps": (1, 4),
                               "tool_s": (0.05, 1.5), "json_share": 0.5}),
        Style("rag_app", "benign", 25, apps.rag_app, {"pro": 1.0}, "cloud",
              params={"per_hour": (1.5, 5.0)}),
        Style("batch_customer", "benign", 25, apps.batch_customer,
              {"pro": 0.8, "partner": 0.2}, "cloud",
              params={"jobs": (1, 3), "items": (120, 300), "concurrency": (1, 4),
                      "gap_s": (0.2, 2.0), "logprobs_share": 0.25}),
        Style("benchmark_run", "benign", 20, apps.benchmark_run,
              {"pro": 0.7, "partner": 0.3}, "cloud",
              params={"concurrency": (2, 8), "logprobs_share": 0.5, "second_model": 0.4}),
        Style("load_tester", "benign", 15, apps.load_tester, {"free": 0.3, "pro": 0.7},
              "home", params={"sessions": (1, 2), "duration_s": (30.0, 120.0),
                              "concurrency": (1, 3)}),
        Style("template_sweep", "attack", 6, attack.template_sweep, {"partner": 1.0}, "proxy",
              params={"requests": (500, 1000), "concurrency": (1, 4), "gap_s": (2.0, 30.0),
                      "rotate_share": 0.5}),
        Style("cot_harvest", "attack", 6, attack.cot_harvest, {"pro": 0.5, "partner": 0.5},
              "proxy", params={"requests": (300, 700), "concurrency": (1, 4),
                               "gap_s": (5.0, 60.0), "short_share": 0.33, **_PERSON_PACED}),
        Style("coverage_crawl", "attack", 6, attack.coverage_crawl, {"pro": 1.0}, "proxy",
              params={"interval_s": (240.0, 480.0), **_PERSON_PACED, "human_share": 0.5,
                      "sigma": 0.8}),
        Style("label_harvest", "attack", 6, attack.label_harvest,
              {"free": 0.15, "pro": 0.45, "partner": 0.4}, "proxy",
              params={"requests": (400, 1000), "concurrency": (1, 4), "gap_s": (15.0, 90.0),
                      **_PERSON_PACED, "human_share": 0.0}),
        Style("hydra", "attack", 30, attack.hydra, {"free": 0.4, "pro": 0.6}, "proxy",
              group=30, params={"wave_s": (600.0, 1200.0), "active_share": (0.4, 0.6),
                                "spread_s": 20.0, "per_wave": (1, 2)}),
        Style("mixed", "attack", 6, attack.mixed, {"free": 0.5, "pro": 0.5}, "proxy",
              params={"chat": {**_CHAT, "sessions_per_day": (3.0, 6.0)}, "attack_share": 0.5,
                      "min_attack": 100}),
        Style("slow_and_low", "attack", 6, attack.slow_and_low, {"free": 0.5, "pro": 0.5},
              "proxy", params={"per_hour": (1.0, 4.0)}),
    )
}  # fmt: skip
