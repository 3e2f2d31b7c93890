"""Sweeps: sampling parameters that harvest a model's distribution, not just its answers.

Over the window's generation requests (N of them):

- ``sweeps.logprobs_share``: share asking for log-probabilities (chat: ``logprobs: true`` or
  ``top_logprobs``; completions: ``logprobs`` an integer, even 0).
- ``sweeps.top_logprobs_mean``: mean alternatives per token asked (chat ``top_logprobs``,
  completions ``logprobs``) over the requests that ask; 0 when none ask.
- ``sweeps.n_mean``: mean ``n`` (absent or invalid: 1).
- ``sweeps.seed_share``: share setting an integer ``seed``.
- ``sweeps.resample_share``: (distinct (prompt, seed, temperature) − distinct prompts) / N,
  where a prompt is the system and user text: each extra setting a prompt is sampled under
  counts once. The same prompt at seeds 1, 2, 3, 4 reads 3/4; plain exact repeats at one
  setting read 0 (templates count those).
- ``sweeps.temperature_distinct``: distinct temperatures (rounded to 3 decimals; absent
  reads as the usual default, 1.0).

All window-content aggregates (counters), so ``evict`` undoes ``add`` exactly. Neutral until
``MIN_REQUESTS`` generation requests.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import Any, NamedTuple

from retort.guard.detect.features.base import Feature
from retort.guard.detect.request import Request

MIN_REQUESTS = 8
DEFAULT_TEMPERATURE = 1.0
GENERATION = ("/v1/chat/completions", "/v1/completions")


class Asked(NamedTuple):
    """What one request asked of the sampler, normalized."""

    logprobs: bool
    top_k: int
    n: int
    seed: int | None
    temperature: float
    prompt: tuple[str, str] | None  # (system, text); None without text


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _temperature(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return DEFAULT_TEMPERATURE
    if isinstance(value, int) and abs(value) > 1_000:  # too large for a float or any sampler
        return DEFAULT_TEMPERATURE
    return round(float(value), 3) if math.isfinite(value) else DEFAULT_TEMPERATURE


def asked(request: Request) -> Asked:
    """The request's sampling parameters, with absent or ill-typed ones at their defaults."""
    p = request.params
    logprobs, top = p.get("logprobs"), _int(p.get("top_logprobs"))
    if request.endpoint.endswith("/v1/completions"):
        asks, k = _int(logprobs) is not None, _int(logprobs) or 0
    else:
        asks = logprobs is True or top is not None or _int(logprobs) is not None
        k = top if top is not None else (_int(logprobs) or 0)
    n = _int(p.get("n"))
    temperature = _temperature(p.get("temperature"))
    return Asked(
        logprobs=asks,
        top_k=max(k, 0) if asks else 0,
        n=n if n is not None and n >= 1 else 1,
        seed=_int(p.get("seed")),
        temperature=temperature,
        prompt=(request.system, request.text) if request.text else None,
    )


class Sweeps:
    """Logprob, n, seed and temperature sweeps, and prompts resampled under new settings."""

    features = (
        Feature(
            "sweeps.logprobs_share",
            "{value:.0%} of requests ask for token log-probabilities",
            neutral=0.0,
            suspicious=1,
        ),
        Feature(
            "sweeps.top_logprobs_mean",
            "asks for the top {value:.1f} alternatives per token",
            neutral=0.0,
            suspicious=1,
        ),
        Feature(
            "sweeps.n_mean",
            "asks for {value:.1f} completions per request",
            neutral=1.0,
            suspicious=1,
        ),
        Feature("sweeps.seed_share", "{value:.0%} of requests pin a sampling seed", neutral=0.0),
        Feature(
            "sweeps.resample_share",
            "{value:.0%} of requests resample an earlier prompt under a new seed or temperature",
            neutral=0.0,
        ),
        Feature(
            "sweeps.temperature_distinct",
            "sweeps {value:.0f} different temperatures",
            neutral=1.0,
        ),
    )

    def __init__(self) -> None:
        self.asked: deque[Asked | None] = deque()  # None: not a generation request
        self.n = self.logprobs = self.top_k = self.n_sum = self.seeded = 0
        self.temperatures: Counter[float] = Counter()
        self.prompts: Counter[tuple[str, str]] = Counter()
        self.settings: Counter[tuple[tuple[str, str], int | None, float]] = Counter()

    def add(self, request: Request) -> None:
        if not request.endpoint.endswith(GENERATION):
            self.asked.append(None)
            return
        a = asked(request)
        self.asked.append(a)
        self.n += 1
        self.logprobs += a.logprobs
        self.top_k += a.top_k
        self.n_sum += a.n
        self.seeded += a.seed is not None
        self.temperatures[a.temperature] += 1
        if a.prompt is not None:
            self.prompts[a.prompt] += 1
            self.settings[(a.prompt, a.seed, a.temperature)] += 1

    def evict(self, request: Request) -> None:
        a = self.asked.popleft()
        if a is None:
            return
        self.n -= 1
        self.logprobs -= a.logprobs
        self.top_k -= a.top_k
        self.n_sum -= a.n
        self.seeded -= a.seed is not None
        _drop(self.temperatures, a.temperature)
        if a.prompt is not None:
            _drop(self.prompts, a.prompt)
            _drop(self.settings, (a.prompt, a.seed, a.temperature))

    def values(self) -> dict[str, float]:
        out = {f.name: f.neutral for f in self.features}
        n = self.n
        if n < MIN_REQUESTS:
            return out
        out["sweeps.logprobs_share"] = self.logprobs / n
        out["sweeps.top_logprobs_mean"] = self.top_k / self.logprobs if self.logprobs else 0.0
        out["sweeps.n_mean"] = self.n_sum / n
        out["sweeps.seed_share"] = self.seeded / n
        out["sweeps.resample_share"] = (len(self.settings) - len(self.prompts)) / n
        out["sweeps.temperature_distinct"] = float(len(self.temperatures))
        return out


def _drop(counter: Counter, item: Any) -> None:
    """One fewer of ``item``; gone at zero, so ``len`` counts what the window holds."""
    counter[item] -= 1
    if counter[item] <= 0:
        del counter[item]
