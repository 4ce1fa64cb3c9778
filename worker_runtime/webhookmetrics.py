"""Prometheus metrics and probes of ``celeriac webhooks``, in a registry of its own.

A dispatcher makes at most a few hundred POSTs a second, so ``prometheus_client``'s
own counters (a lock per increment) cost nothing worth avoiding here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# The buckets of one attempt: from a fast local receiver up to the longest timeout.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# NATS may be away this long (a server restart) before /healthz reports it.
DISCONNECT_GRACE = 10.0


class Outcome(StrEnum):
    """What one handled job came to; each handling counts under exactly one."""

    DELIVERED = "delivered"  # a 2xx: acknowledged
    RETRIED = "retried"  # no 2xx, attempts left: NAKed with a delay
    DEAD_LETTERED = "dead_lettered"  # given up: a final answer, no attempts left, no secret
    REFUSED = "refused"  # the destination is not allowed: dead-lettered without a POST


def status_class(status: int | None) -> str:
    """``2xx`` ... ``5xx`` for an HTTP status; ``none`` when no answer came."""
    if status is None or not 100 <= status <= 599:
        return "none"
    return f"{status // 100}xx"


class DispatcherMetrics:
    """Deliveries by outcome and status class, attempt latency and jobs in flight."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._deliveries = Counter(
            "celeriac_webhooks_deliveries",
            "Webhook jobs handled, by what came of the attempt and the HTTP status class "
            "of its answer (none: no answer, or no attempt).",
            ["outcome", "status_class"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "celeriac_webhooks_attempt_duration_seconds",
            "Time of one POST, connect to answer (or to the error).",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._in_flight = Gauge(
            "celeriac_webhooks_in_flight",
            "Webhook jobs this dispatcher is handling now.",
            registry=self.registry,
        )
        # Every series exists from the start, so a rate() over a fresh process works.
        for outcome in Outcome:
            for cls in ("2xx", "3xx", "4xx", "5xx", "none"):
                self._deliveries.labels(outcome.value, cls)

    def count(self, outcome: Outcome, status: int | None) -> None:
        """Record one handled job."""
        self._deliveries.labels(outcome.value, status_class(status)).inc()

    def observe_attempt(self, seconds: float) -> None:
        """Record the duration of one POST."""
        self._latency.observe(seconds)

    def count_in_flight(self, held: Callable[[], int]) -> None:
        """Report ``held()`` as the jobs under way."""
        self._in_flight.set_function(lambda: float(held()))

    def render(self) -> bytes:
        """The text exposition format served on /metrics."""
        return bytes(generate_latest(self.registry))


class DispatcherProbe:
    """Liveness and readiness of a dispatcher, from its NATS connection and its loop."""

    def __init__(
        self,
        connection: Callable[[], tuple[bool, bool] | None],
        consuming: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # connection() -> (connected, reconnecting), or None before the first connect.
        self._connection = connection
        self._consuming = consuming
        self._clock = clock
        self._disconnected_since: float | None = None
        self.stopping = False

    def liveness(self) -> tuple[bool, str]:
        """Alive while NATS is connected, or was lost less than a restart ago."""
        state = self._connection()
        if state is None:
            return True, "starting"
        connected, reconnecting = state
        if connected:
            self._disconnected_since = None
            return True, "nats connected"
        now = self._clock()
        if self._disconnected_since is None:
            self._disconnected_since = now
        away = now - self._disconnected_since
        if reconnecting or away < DISCONNECT_GRACE:
            return True, "nats reconnecting"
        return False, f"nats disconnected for {away:.0f}s"

    def readiness(self) -> tuple[bool, str]:
        """Ready while consuming jobs over a connected NATS and not stopping."""
        if self.stopping:
            return False, "stopping"
        state = self._connection()
        if state is None or not self._consuming():
            return False, "not consuming webhook jobs yet"
        if not state[0]:
            return False, "nats disconnected"
        return True, "consuming webhook jobs"
