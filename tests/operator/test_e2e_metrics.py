"""The running operator's GET /metrics: reconcile counters and a scaling pool's gauges,
and the pool's series gone once the pool is deleted."""

from __future__ import annotations

import sys
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from celeriac_devenv.cluster import KubeEnvironment
from prometheus_client.parser import text_string_to_metric_families

from tests.operator.kubeobjects import APPS, get, opscale_pool, wait

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(operator: Any) -> Samples:
    """Every sample the operator's /metrics shows, by name and sorted labels."""
    url = f"http://127.0.0.1:{operator.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, metric: str, **labels: str) -> float | None:
    return samples.get((f"celeriac_operator_{metric}", tuple(sorted(labels.items()))))


@pytest.fixture
def tasks_module(operator: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    # The app reads its NATS URL when the module is imported, as in the worker pods.
    monkeypatch.setenv("CELERIAC_NATS_URL", str(operator.kube.nats_url))
    monkeypatch.syspath_prepend(str(APPS))
    sys.modules.pop("opscale_tasks", None)
    import opscale_tasks

    yield opscale_tasks
    opscale_tasks.app.close()
    sys.modules.pop("opscale_tasks", None)


def test_metrics_show_reconciles_and_the_pools_gauges_until_it_goes(
    operator: Any, namespace: str, tasks_module: Any
) -> None:
    kube: KubeEnvironment = operator.kube
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    pool = {"namespace": namespace, "name": name}
    objects = [
        {
            "apiVersion": "celeriac.io/v1alpha1",
            "kind": "TaskQueue",
            "metadata": {"name": name},
            "spec": {"deletionPolicy": "Delete"},
        },
        opscale_pool(
            name,
            [name],
            concurrency=5,
            pool="asyncio",
            autoscaling={
                "minReplicas": 0,
                "maxReplicas": 2,
                "targetBacklogPerReplica": 5,
                "pollInterval": "1s",
            },
        ),
    ]
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))
    wait(
        lambda: sample(scrape(operator), "pool_desired_replicas", **pool) == 0,
        "the idle pool's gauges at zero replicas",
    )

    app, square = tasks_module.app, tasks_module.square
    results = app.send_many([square.s(i).set(queue=name) for i in range(10)])

    def scaled_up() -> Samples | None:
        samples = scrape(operator)
        return samples if sample(samples, "pool_desired_replicas", **pool) == 2 else None

    samples = wait(scaled_up, "the pool's desired replicas at 2 on /metrics", timeout=30)
    assert (sample(samples, "scaling_decisions_total", **pool, direction="up") or 0) >= 1
    assert sample(samples, "pool_backlog", **pool) is not None
    assert sample(samples, "pool_in_flight", **pool) is not None
    assert sample(samples, "pool_ready_replicas", **pool) is not None
    for kind in ("WorkerPool", "TaskQueue"):
        assert (sample(samples, "reconciles_total", kind=kind, outcome="ok") or 0) >= 1
    assert sample(samples, "reconciles_total", kind="TaskSchedule", outcome="error") is not None
    assert [r.get(timeout=120) for r in results] == [i * i for i in range(10)]

    def queue_backlog() -> float | None:
        return sample(scrape(operator), "queue_backlog", **pool, queue=name)

    wait(lambda: queue_backlog() == 0, "the TaskQueue's backlog at 0 on /metrics", timeout=30)
    # Polls since the scale-up kept the pool where it was (scaling down waits).
    holds = sample(scrape(operator), "scaling_decisions_total", **pool, direction="hold")
    assert (holds or 0) >= 1

    kube.kubectl("delete", "-n", namespace, "workerpool", name, "--wait=false")
    kube.kubectl("delete", "-n", namespace, "taskqueue", name, "--wait=false")

    def gone() -> bool:
        labels = ("name", name)
        return not any(labels in key[1] for key in scrape(operator))

    wait(gone, "every series of the deleted pool and queue gone from /metrics", timeout=60)
    wait(lambda: get(kube, namespace, "workerpool", name) is None, "the pool deleted")
