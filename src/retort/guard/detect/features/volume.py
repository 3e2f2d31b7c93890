"""Volume: how much a key asks and how much it takes away.

Over the key's window (every request, any endpoint):

- ``volume.requests_per_hour``: (N − 1) gaps over the window's span, × 3600; the span is
  floored at ``SPAN_FLOOR`` s so a burst does not read as infinite.
- ``volume.output_input_ratio``: Σ completion tokens / Σ prompt tokens over the requests
  whose usage is known (the denominator floored at 1). Distillation wants long answers to
  short prompts; a classification job sends long inputs for short labels.
- ``volume.mean_completion_tokens``: mean completion tokens over those requests.
- ``volume.refused_share``: share refused by the gateway or the upstream (status 429 or 403,
  or decision ``refused``/``rate_limited``/``blocked``/``upstream_refused``): a key pushing
  against its limits.

Each feature is neutral until its denominator holds ``MIN_REQUESTS`` requests. Timestamps are
kept as integer microseconds and token counts as integers, so ``add`` then ``evict`` leaves
the sums exactly as they were (no floating-point drift over a long-running gateway).
Requests must arrive oldest first (``evict`` removes the oldest).
"""

from __future__ import annotations

from collections import deque

from retort.guard.detect.features.base import Feature
from retort.guard.detect.request import Request

MIN_REQUESTS = 8
SPAN_FLOOR = 60.0  # seconds
REFUSED_STATUS = frozenset({403, 429})
REFUSED_DECISIONS = frozenset({"refused", "rate_limited", "blocked", "upstream_refused"})


def micros(ts: float) -> int:
    """A timestamp as integer microseconds: sums of these add and subtract exactly."""
    return round(ts * 1_000_000)


def refused(request: Request) -> bool:
    """Whether the gateway or the upstream refused the request."""
    return request.status in REFUSED_STATUS or request.decision in REFUSED_DECISIONS


class Volume:
    """Request rate, output/input token ratio, answer length and refusals."""

    features = (
        Feature(
            "volume.requests_per_hour",
            "sends {value:.0f} requests an hour",
            neutral=30.0,
            suspicious=1,
        ),
        Feature(
            "volume.output_input_ratio",
            "takes {value:.1f} output tokens per input token",
            neutral=1.0,
        ),
        Feature(
            "volume.mean_completion_tokens",
            "answers average {value:.0f} tokens",
            neutral=150.0,
        ),
        Feature(
            "volume.refused_share",
            "{value:.0%} of requests were refused or rate-limited",
            neutral=0.0,
        ),
    )

    def __init__(self) -> None:
        self.stamps: deque[int] = deque()  # µs, oldest first
        self.usage: deque[tuple[int, int] | None] = deque()  # (prompt, completion) or None
        self.prompt_sum = self.completion_sum = self.with_usage = self.refused = 0

    def add(self, request: Request) -> None:
        self.stamps.append(micros(request.ts))
        usage = None
        if request.prompt_tokens is not None and request.completion_tokens is not None:
            usage = (request.prompt_tokens, request.completion_tokens)
            self.prompt_sum += usage[0]
            self.completion_sum += usage[1]
            self.with_usage += 1
        self.usage.append(usage)
        self.refused += refused(request)

    def evict(self, request: Request) -> None:
        self.stamps.popleft()
        usage = self.usage.popleft()
        if usage is not None:
            self.prompt_sum -= usage[0]
            self.completion_sum -= usage[1]
            self.with_usage -= 1
        self.refused -= refused(request)

    def values(self) -> dict[str, float]:
        out = {f.name: f.neutral for f in self.features}
        n = len(self.stamps)
        if n >= MIN_REQUESTS:
            span = max((self.stamps[-1] - self.stamps[0]) / 1e6, SPAN_FLOOR)
            out["volume.requests_per_hour"] = (n - 1) / span * 3600
            out["volume.refused_share"] = self.refused / n
        if self.with_usage >= MIN_REQUESTS:
            out["volume.output_input_ratio"] = self.completion_sum / max(self.prompt_sum, 1)
            out["volume.mean_completion_tokens"] = self.completion_sum / self.with_usage
        return out
