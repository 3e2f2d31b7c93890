"""Prometheus metrics of one gateway process (its own registry, so apps do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    """Requests, latency, tokens and policy decisions, labelled by key tier."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "guard_requests",
            "Requests answered",
            ["tier", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "guard_request_seconds",
            "Time from request to the last byte",
            ["endpoint"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.tokens = Counter(
            "guard_tokens",
            "Tokens used, from the upstream's usage",
            ["tier", "kind"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "guard_decisions", "Policy decisions", ["tier", "decision"], registry=self.registry
        )
