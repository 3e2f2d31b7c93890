"""Timing: does the key keep a human's hours and rhythm, or a scheduler's?

Over the gaps between the window's consecutive requests (N requests, N − 1 gaps):

- ``timing.interarrival_cv``: σ/μ of the gaps (population σ). A cron job or a rate-limited
  loop is near 0, a Poisson stream is 1, a human's sessions are above 1. All gaps 0 (one
  burst at a single instant) reads 0: nothing human sends like that.
- ``timing.burstiness``: (σ − μ)/(σ + μ) of the gaps (Goh & Barabási 2008): −1 periodic,
  0 Poisson, towards 1 bursty; 0 when σ + μ = 0.
- ``timing.hour_uniformity``: entropy of the requests' UTC hour of day over 24 bins,
  divided by log 24: 1 when every hour is equally busy (a machine that never sleeps), lower
  for a human's day. Neutral while the window spans under ``HOURS_SPAN_MIN`` hours, where
  a low value would say only that the window is short.

Neutral until the window holds ``MIN_REQUESTS`` requests. Gaps are integer microseconds so
the running sums add and subtract exactly. Requests must arrive oldest first.
"""

from __future__ import annotations

import math
from collections import deque

from retort.guard.detect.features.base import Feature
from retort.guard.detect.features.volume import micros
from retort.guard.detect.request import Request

MIN_REQUESTS = 8
HOURS_SPAN_MIN = 6.0
HOUR_US = 3600 * 1_000_000


class Timing:
    """Regularity of inter-arrival gaps and spread over the hours of the day."""

    features = (
        Feature(
            "timing.interarrival_cv",
            "requests arrive at machine-regular intervals (gap CV {value:.2f})",
            neutral=1.0,
        ),
        Feature(
            "timing.hour_uniformity",
            "traffic is spread evenly over the 24 hours of the day (uniformity {value:.2f})",
            neutral=0.75,
        ),
        Feature(
            "timing.burstiness",
            "requests come evenly, not in bursts (burstiness {value:+.2f}; −1 clockwork, 0 random)",
            neutral=0.0,
        ),
    )

    def __init__(self) -> None:
        self.stamps: deque[int] = deque()  # µs, oldest first
        self.gaps: deque[int] = deque()  # µs between consecutive stamps
        self.gap_sum = self.gap_sq = 0
        self.hours = [0] * 24

    def add(self, request: Request) -> None:
        stamp = micros(request.ts)
        if self.stamps:
            gap = max(stamp - self.stamps[-1], 0)  # out-of-order arrivals read as together
            self.gaps.append(gap)
            self.gap_sum += gap
            self.gap_sq += gap * gap
        self.stamps.append(stamp)
        self.hours[(stamp // HOUR_US) % 24] += 1

    def evict(self, request: Request) -> None:
        stamp = self.stamps.popleft()
        self.hours[(stamp // HOUR_US) % 24] -= 1
        if self.gaps:
            gap = self.gaps.popleft()
            self.gap_sum -= gap
            self.gap_sq -= gap * gap

    def values(self) -> dict[str, float]:
        out = {f.name: f.neutral for f in self.features}
        n = len(self.stamps)
        if n < MIN_REQUESTS:
            return out
        gaps = len(self.gaps)
        mean = self.gap_sum / gaps
        # exact integer variance × gaps², then one float sqrt
        var_num = gaps * self.gap_sq - self.gap_sum * self.gap_sum
        sigma = math.sqrt(max(var_num, 0)) / gaps
        out["timing.interarrival_cv"] = sigma / mean if mean > 0 else 0.0
        out["timing.burstiness"] = (sigma - mean) / (sigma + mean) if sigma + mean > 0 else 0.0
        if (self.stamps[-1] - self.stamps[0]) / HOUR_US >= HOURS_SPAN_MIN:
            entropy = -sum(c / n * math.log(c / n) for c in self.hours if c)
            out["timing.hour_uniformity"] = entropy / math.log(24)
        return out
