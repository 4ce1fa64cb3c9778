"""Prometheus metrics of one worker, in a registry of its own (no process-wide state)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LABELS = ("queue", "task")
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


def _counter(registry: CollectorRegistry, name: str, doc: str) -> Counter:
    return Counter(f"celeriac_worker_tasks_{name}", doc, _LABELS, registry=registry)


@dataclass
class WorkerMetrics:
    """Counters by queue and task, the in-flight gauge and the duration histogram."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _children: dict[tuple[str, str], TaskMetrics] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.received = _counter(r, "received", "Messages taken from the queue.")
        self.succeeded = _counter(r, "succeeded", "Tasks that returned a result.")
        self.failed = _counter(r, "failed", "Tasks that failed for good (no retries left).")
        self.retried = _counter(r, "retried", "Failed attempts scheduled for a retry.")
        self.dead_lettered = _counter(r, "dead_lettered", "Messages sent to a dead-letter stream.")
        self.revoked = _counter(r, "revoked", "Tasks skipped because revoked or expired.")
        self.in_flight = Gauge(
            "celeriac_worker_tasks_in_flight", "Messages held by this worker now.", registry=r
        )
        self.duration = Histogram(
            "celeriac_worker_task_duration_seconds",
            "Run time of task functions.",
            _LABELS,
            buckets=_DURATION_BUCKETS,
            registry=r,
        )

    def of(self, queue: str, task: str) -> TaskMetrics:
        """The series of one queue and task (looked up once: ``labels()`` takes a lock)."""
        key = (queue, task)
        children = self._children.get(key)
        if children is None:
            children = TaskMetrics(
                received=self.received.labels(queue, task),
                succeeded=self.succeeded.labels(queue, task),
                failed=self.failed.labels(queue, task),
                retried=self.retried.labels(queue, task),
                dead_lettered=self.dead_lettered.labels(queue, task),
                revoked=self.revoked.labels(queue, task),
                duration=self.duration.labels(queue, task),
            )
            self._children[key] = children
        return children

    def render(self) -> bytes:
        """The text exposition format served on /metrics."""
        return bytes(generate_latest(self.registry))


@dataclass(frozen=True)
class TaskMetrics:
    """The labelled series of one (queue, task) pair."""

    received: Counter
    succeeded: Counter
    failed: Counter
    retried: Counter
    dead_lettered: Counter
    revoked: Counter
    duration: Histogram
