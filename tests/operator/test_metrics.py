"""The operator's metrics registry: labels, counts, and series dropped with their object."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from prometheus_client.parser import text_string_to_metric_families

from celeriac.operator.metrics import OperatorMetrics, counted, direction, failure_reason


def samples(metrics: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the rendered page, by name and sorted labels (what a scrape sees)."""
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: OperatorMetrics, metric: str, **labels: str) -> float | None:
    return samples(metrics).get((f"celeriac_operator_{metric}", tuple(sorted(labels.items()))))


def names(metrics: OperatorMetrics) -> set[str]:
    return {name for name, _ in samples(metrics)}


@pytest.mark.parametrize(
    ("current", "replicas", "expected"),
    [(0, 3, "up"), (2, 3, "up"), (3, 1, "down"), (1, 0, "down"), (2, 2, "hold"), (0, 0, "hold")],
)
def test_direction(current: int, replicas: int, expected: str) -> None:
    assert direction(current, replicas) == expected


@pytest.mark.parametrize(
    ("exc", "patch", "expected"),
    [
        (kopf.PermanentError("x"), {}, "PermanentError"),
        (RuntimeError("boom"), None, "RuntimeError"),
        (
            kopf.TemporaryError("NATS: ..."),
            {"conditions": [{"type": "Ready", "status": "False", "reason": "NatsUnavailable"}]},
            "NatsUnavailable",
        ),
        (  # a Ready=True condition is no reason for a failure
            ValueError("x"),
            {"conditions": [{"type": "Ready", "status": "True", "reason": "Ready"}]},
            "ValueError",
        ),
    ],
)
def test_failure_reason(exc: Exception, patch: dict[str, Any] | None, expected: str) -> None:
    assert failure_reason(exc, patch) == expected


def test_reconciles_start_at_zero_for_every_kind_and_outcome() -> None:
    metrics = OperatorMetrics()
    for kind in ("TaskQueue", "WorkerPool", "TaskSchedule"):
        for outcome in ("ok", "error"):
            assert value(metrics, "reconciles_total", kind=kind, outcome=outcome) == 0


def test_reconciles_and_errors_are_counted_by_kind_outcome_and_reason() -> None:
    metrics = OperatorMetrics()
    metrics.reconciled("WorkerPool")
    metrics.reconciled("WorkerPool")
    metrics.reconciled("TaskQueue", "NatsUnavailable")
    metrics.error("TaskQueue", "ApiException")
    assert value(metrics, "reconciles_total", kind="WorkerPool", outcome="ok") == 2
    assert value(metrics, "reconciles_total", kind="TaskQueue", outcome="error") == 1
    assert value(metrics, "errors_total", kind="TaskQueue", reason="NatsUnavailable") == 1
    assert value(metrics, "errors_total", kind="TaskQueue", reason="ApiException") == 1
    assert value(metrics, "errors_total", kind="WorkerPool", reason="NatsUnavailable") is None


def test_pool_series_are_set_from_a_poll_and_dropped_with_the_pool() -> None:
    metrics = OperatorMetrics()
    fields = {"backlog": 12, "inFlight": 3, "desiredReplicas": 4, "readyReplicas": 2}
    metrics.pool_observed("apps", "emails", fields)
    metrics.pool_observed("apps", "reports", {"readyReplicas": 1})  # NATS down: no backlog
    metrics.scaled("apps", "emails", 2, 4)
    metrics.scaled("apps", "emails", 4, 4)
    pool = {"namespace": "apps", "name": "emails"}
    assert value(metrics, "pool_backlog", **pool) == 12
    assert value(metrics, "pool_in_flight", **pool) == 3
    assert value(metrics, "pool_desired_replicas", **pool) == 4
    assert value(metrics, "pool_ready_replicas", **pool) == 2
    assert value(metrics, "scaling_decisions_total", **pool, direction="up") == 1
    assert value(metrics, "scaling_decisions_total", **pool, direction="hold") == 1
    assert value(metrics, "pool_backlog", namespace="apps", name="reports") is None
    assert value(metrics, "pool_ready_replicas", namespace="apps", name="reports") == 1

    metrics.forget_pool("apps", "emails")
    left = [labels for _, labels in samples(metrics) if ("name", "emails") in labels]
    assert left == []
    assert value(metrics, "pool_ready_replicas", namespace="apps", name="reports") == 1
    metrics.forget_pool("apps", "never-seen")  # no error for a pool without series


def test_queue_backlog_follows_its_queue_and_goes_with_the_taskqueue() -> None:
    metrics = OperatorMetrics()
    metrics.queue_observed("apps", "emails", "emails", 5)
    assert value(metrics, "queue_backlog", namespace="apps", name="emails", queue="emails") == 5
    metrics.queue_observed("apps", "emails", "mail", 7)  # spec.queueName changed
    assert value(metrics, "queue_backlog", namespace="apps", name="emails", queue="emails") is None
    assert value(metrics, "queue_backlog", namespace="apps", name="emails", queue="mail") == 7
    metrics.queue_observed("apps", "emails", "mail", None)  # refused: another's queue
    assert "celeriac_operator_queue_backlog" not in names(metrics)
    metrics.queue_observed("apps", "emails", "mail", 1)
    metrics.forget_queue("apps", "emails")
    assert "celeriac_operator_queue_backlog" not in names(metrics)


async def test_counted_wraps_a_handler_and_counts_its_outcome() -> None:
    metrics = OperatorMetrics()

    @counted("TaskQueue")
    async def reconcile(patch: kopf.Patch, **_: Any) -> str:
        if _["fail"]:
            patch.status["conditions"] = [
                {"type": "Ready", "status": "False", "reason": "JetStreamRefused"}
            ]
            raise kopf.TemporaryError("refused")
        return "done"

    memo = kopf.Memo(metrics=metrics)
    assert await reconcile(patch=kopf.Patch(), memo=memo, fail=False) == "done"
    with pytest.raises(kopf.TemporaryError):
        await reconcile(patch=kopf.Patch(), memo=memo, fail=True)
    with pytest.raises(kopf.TemporaryError):  # nothing counted without metrics in the memo
        await reconcile(patch=kopf.Patch(), memo=kopf.Memo(), fail=True)
    assert value(metrics, "reconciles_total", kind="TaskQueue", outcome="ok") == 1
    assert value(metrics, "reconciles_total", kind="TaskQueue", outcome="error") == 1
    assert value(metrics, "errors_total", kind="TaskQueue", reason="JetStreamRefused") == 1
    assert reconcile.__name__ == "reconcile"  # kopf keys its records by it


async def test_counting_errors_counts_by_class_and_passes_the_error_on() -> None:
    metrics = OperatorMetrics()

    async def poll() -> float:
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):
        await metrics.counting_errors("WorkerPool", poll)()
    assert value(metrics, "errors_total", kind="WorkerPool", reason="ConnectionResetError") == 1
