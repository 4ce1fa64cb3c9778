"""Prometheus metrics of one worker, in a registry of its own (no process-wide state).

The counts are plain numbers kept by the event loop, the only writer, and turned
into Prometheus families when ``/metrics`` is scraped: ``prometheus_client``'s own
counters take a lock on every increment, which a worker would pay several times
per task.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

_LABELS = ["queue", "task"]
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_BOUNDS = (*_DURATION_BUCKETS, float("inf"))
_COUNTERS = {
    "received": "Messages taken from the queue.",
    "succeeded": "Tasks that returned a result.",
    "failed": "Tasks that failed for good (no retries left).",
    "retried": "Failed attempts scheduled for a retry.",
    "dead_lettered": "Messages sent to a dead-letter stream.",
    "revoked": "Tasks skipped because revoked or expired.",
}


class Count:
    """A monotonic count."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        """Add one."""
        self.value += 1


class Durations:
    """A histogram of run times."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(_DURATION_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Record one run time."""
        self.buckets[bisect.bisect_left(_DURATION_BUCKETS, seconds)] += 1
        self.total += seconds


@dataclass
class TaskMetrics:
    """The series of one (queue, task) pair."""

    received: Count = field(default_factory=Count)
    succeeded: Count = field(default_factory=Count)
    failed: Count = field(default_factory=Count)
    retried: Count = field(default_factory=Count)
    dead_lettered: Count = field(default_factory=Count)
    revoked: Count = field(default_factory=Count)
    duration: Durations = field(default_factory=Durations)


class WorkerMetrics(Collector):
    """Counters by queue and task, the in-flight gauge and the duration histogram."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._series: dict[tuple[str, str], TaskMetrics] = {}
        self._in_flight: Callable[[], int] = lambda: 0
        # Task events that could not be published (celeriac worker --events).
        self.events_dropped = Count()
        self.registry.register(self)

    def of(self, queue: str, task: str) -> TaskMetrics:
        """The series of one queue and task."""
        key = (queue, task)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = TaskMetrics()
        return series

    def totals(self) -> tuple[int, int, int]:
        """Tasks succeeded, failed for good and retried, over every queue and task."""
        series = list(self._series.values())
        return (
            sum(m.succeeded.value for m in series),
            sum(m.failed.value for m in series),
            sum(m.retried.value for m in series),
        )

    def count_in_flight(self, held: Callable[[], int]) -> None:
        """Report ``held()`` as the messages the worker holds now."""
        self._in_flight = held

    def collect(self) -> Iterator[Metric]:
        """The families, built from the counts at scrape time."""
        series = list(self._series.items())
        for name, doc in _COUNTERS.items():
            family = CounterMetricFamily(f"celeriac_worker_tasks_{name}", doc, labels=_LABELS)
            for (queue, task), metrics in series:
                family.add_metric([queue, task], getattr(metrics, name).value)
            yield family
        yield GaugeMetricFamily(
            "celeriac_worker_tasks_in_flight",
            "Messages held by this worker now.",
            value=self._in_flight(),
        )
        yield CounterMetricFamily(
            "celeriac_worker_events_dropped",
            "Task events not published (NATS disconnected, or the publish failed).",
            value=self.events_dropped.value,
        )
        histogram = HistogramMetricFamily(
            "celeriac_worker_task_duration_seconds", "Run time of task functions.", labels=_LABELS
        )
        for (queue, task), metrics in series:
            durations = metrics.duration
            cumulative, buckets = 0, []
            for bound, count in zip(
                (*_DURATION_BUCKETS, float("inf")), durations.buckets, strict=True
            ):
                cumulative += count
                buckets.append((_bound(bound), float(cumulative)))
            histogram.add_metric([queue, task], buckets, durations.total)
        yield histogram

    def render(self) -> bytes:
        """The text exposition format served on /metrics."""
        return bytes(generate_latest(self.registry))


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))
