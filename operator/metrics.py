"""Prometheus metrics of the operator, served at ``GET /metrics`` next to ``/healthz``.

Every series lives in the registry of one :class:`OperatorMetrics` (kept in the
kopf memo), so tests and a second operator in one process never share counts.
Labels stay bounded: a kind, an outcome, a direction, the names of existing
objects, and error reasons that are condition reasons or exception class names,
never messages. A deleted WorkerPool or TaskQueue takes its series with it.

The handlers count at their edges: :func:`counted` wraps the change handlers,
:meth:`OperatorMetrics.counting_errors` the polls, and the polls report what they
observed; the autoscaling policy itself knows nothing of metrics.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

KINDS = ("TaskQueue", "WorkerPool", "TaskSchedule")
OUTCOMES = ("ok", "error")
DIRECTIONS = ("up", "down", "hold")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PREFIX = "celeriac_operator_"
_OBJECT = ["namespace", "name"]

T = TypeVar("T")


def direction(current: int, replicas: int) -> str:
    """``up``, ``down`` or ``hold``: where a scaling decision takes a pool."""
    if replicas > current:
        return "up"
    if replicas < current:
        return "down"
    return "hold"


def failure_reason(exc: BaseException, status_patch: Mapping[str, Any] | None) -> str:
    """Why a reconcile failed, as a bounded label: the reason of the ``Ready=False``
    condition the handler wrote, else the exception's class name."""
    for cond in (status_patch or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "False" and cond.get("reason"):
            return str(cond["reason"])
    return type(exc).__name__


class OperatorMetrics:
    """The operator's counters and gauges, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.reconciles = Counter(
            f"{_PREFIX}reconciles",
            "Runs of the create/update/resume handlers, by resource kind and outcome.",
            ["kind", "outcome"],
            registry=registry,
        )
        self.errors = Counter(
            f"{_PREFIX}errors",
            "Failed reconciles and polls, by resource kind and reason (a condition reason "
            "or an exception class name).",
            ["kind", "reason"],
            registry=registry,
        )
        self.scaling_decisions = Counter(
            f"{_PREFIX}scaling_decisions",
            "Autoscaling decisions, by WorkerPool and direction (up, down, hold).",
            [*_OBJECT, "direction"],
            registry=registry,
        )
        self.pool_backlog = self._gauge("pool_backlog", "Tasks waiting in the pool's queues.")
        self.pool_in_flight = self._gauge(
            "pool_in_flight", "Tasks of the pool's queues handed to a worker and not yet acked."
        )
        self.pool_desired_replicas = self._gauge(
            "pool_desired_replicas", "Replicas the operator wants for the pool."
        )
        self.pool_ready_replicas = self._gauge(
            "pool_ready_replicas", "Ready worker pods of the pool's Deployment."
        )
        self.queue_backlog = Gauge(
            f"{_PREFIX}queue_backlog",
            "Tasks waiting in a TaskQueue's queue.",
            [*_OBJECT, "queue"],
            registry=registry,
        )
        self._pool_gauges = (
            self.pool_backlog,
            self.pool_in_flight,
            self.pool_desired_replicas,
            self.pool_ready_replicas,
        )
        # The queue label of each TaskQueue's series, to remove it when it changes or goes.
        self._queues: dict[tuple[str, str], str] = {}
        for kind in KINDS:  # zeros from the start, so rate() sees the first reconcile
            for outcome in OUTCOMES:
                self.reconciles.labels(kind, outcome)

    def _gauge(self, name: str, doc: str) -> Gauge:
        return Gauge(f"{_PREFIX}{name}", doc, _OBJECT, registry=self.registry)

    def reconciled(self, kind: str, failure: str | None = None) -> None:
        """Count one reconcile of ``kind``; ``failure`` is the reason it failed, if it did."""
        self.reconciles.labels(kind, "error" if failure else "ok").inc()
        if failure:
            self.errors.labels(kind, failure).inc()

    def error(self, kind: str, reason: str) -> None:
        """Count one error outside a reconcile (a failed poll)."""
        self.errors.labels(kind, reason).inc()

    def counting_errors(
        self, kind: str, call: Callable[[], Awaitable[T]]
    ) -> Callable[[], Awaitable[T]]:
        """``call``, counting what it raises (by class name) before passing it on."""

        async def counted_call() -> T:
            try:
                return await call()
            except Exception as exc:
                self.error(kind, type(exc).__name__)
                raise

        return counted_call

    def scaled(self, namespace: str, name: str, current: int, replicas: int) -> None:
        """Count one autoscaling decision of a pool: from ``current`` to ``replicas``."""
        self.scaling_decisions.labels(namespace, name, direction(current, replicas)).inc()

    def pool_observed(self, namespace: str, name: str, fields: Mapping[str, Any]) -> None:
        """Set the pool's gauges from the status fields of a poll (those it could read)."""
        values = (
            fields.get("backlog"),
            fields.get("inFlight"),
            fields.get("desiredReplicas"),
            fields.get("readyReplicas"),
        )
        for gauge, value in zip(self._pool_gauges, values, strict=True):
            if value is not None:
                gauge.labels(namespace, name).set(value)

    def forget_pool(self, namespace: str, name: str) -> None:
        """Drop every series of a pool that is gone."""
        for gauge in self._pool_gauges:
            _remove(gauge, namespace, name)
        for way in DIRECTIONS:
            _remove(self.scaling_decisions, namespace, name, way)

    def queue_observed(self, namespace: str, name: str, queue: str, backlog: int | None) -> None:
        """Set the backlog gauge of TaskQueue ``namespace/name`` (its queue ``queue``);
        ``None``: the queue is not this TaskQueue's (refused), so it has no series."""
        if backlog is None:
            self.forget_queue(namespace, name)
            return
        previous = self._queues.get((namespace, name))
        if previous is not None and previous != queue:
            _remove(self.queue_backlog, namespace, name, previous)
        self._queues[(namespace, name)] = queue
        self.queue_backlog.labels(namespace, name, queue).set(backlog)

    def forget_queue(self, namespace: str, name: str) -> None:
        """Drop the series of a TaskQueue that is gone (or whose queue is not its own)."""
        queue = self._queues.pop((namespace, name), None)
        if queue is not None:
            _remove(self.queue_backlog, namespace, name, queue)

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)


def _remove(metric: Counter | Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never set
        metric.remove(*labels)


def counted(kind: str) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Count each run of a kopf change handler of ``kind`` and why it failed.

    Put it under the ``@kopf.on...`` decorators: kopf keys its handler records by
    the wrapped function's name, which this keeps. Counts go to ``memo.metrics``
    (nothing is counted when the memo has none).
    """

    def decorate(handler: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(handler)
        async def run(**kwargs: Any) -> T:
            metrics: OperatorMetrics | None = kwargs["memo"].get("metrics")
            try:
                result = await handler(**kwargs)
            except Exception as exc:
                if metrics is not None:
                    patch = kwargs.get("patch")
                    metrics.reconciled(kind, failure_reason(exc, patch.status if patch else None))
                raise
            if metrics is not None:
                metrics.reconciled(kind)
            return result

        return run

    return decorate
