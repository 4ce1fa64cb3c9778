"""The gateway's Prometheus metrics, in a registry of its own (one per app)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# Submits take milliseconds (one publish and its acknowledgement); outages take seconds.
SUBMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


def _requests(registry: CollectorRegistry) -> Counter:
    return Counter(
        "celeriac_gateway_requests", "HTTP requests answered, by route, method and status",
        ["route", "method", "status"], registry=registry,
    )  # fmt: skip


def _submits(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "celeriac_gateway_submit_seconds",
        "Time to enqueue one task (until JetStream confirmed it), by outcome",
        ["outcome"], buckets=SUBMIT_BUCKETS, registry=registry,
    )  # fmt: skip


@dataclass
class Metrics:
    """Requests by route and status, and the submit latency."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = _requests(self.registry)
        self.submits = _submits(self.registry)

    def request(self, route: str, method: str, status: int) -> None:
        """Count one answered request."""
        self.requests.labels(route, method, str(status)).inc()

    def submitted(self, seconds: float, outcome: str) -> None:
        """Observe one submit: ``accepted``, ``refused`` or ``unavailable``."""
        self.submits.labels(outcome).observe(seconds)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return bytes(generate_latest(self.registry))
