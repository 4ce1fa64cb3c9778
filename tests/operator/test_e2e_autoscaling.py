"""Autoscaling with real workers: 2,000 tasks scale the pool up, drain, then back to zero."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

import pytest
import yaml
from celeriac_devenv.cluster import KubeEnvironment

from tests.operator.kubeobjects import APPS, opscale_pool, wait

pytestmark = pytest.mark.e2e


def replicas(kube: KubeEnvironment, namespace: str, pool: str) -> int | None:
    proc = kube.kubectl(
        "get", "-n", namespace, "deployment", f"{pool}-workers", "-o", "json", check=False
    )
    return int(json.loads(proc.stdout)["spec"]["replicas"]) if proc.returncode == 0 else None


def scale_messages(kube: KubeEnvironment, namespace: str, pool: str) -> list[str]:
    out = kube.kubectl(
        "get", "-n", namespace, "events", "--field-selector",
        f"involvedObject.name={pool},reason=Scaled", "-o", "json",
    ).stdout  # fmt: skip
    return [str(e["message"]) for e in json.loads(out)["items"]]


@pytest.fixture
def tasks_module(operator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    # The app reads its NATS URL when the module is imported, as in the worker pods.
    monkeypatch.setenv("CELERIAC_NATS_URL", str(operator.kube.nats_url))
    monkeypatch.syspath_prepend(str(APPS))
    sys.modules.pop("opscale_tasks", None)
    import opscale_tasks

    yield opscale_tasks
    opscale_tasks.app.close()
    sys.modules.pop("opscale_tasks", None)


def test_pool_scales_up_drains_and_returns_to_zero(
    operator: Any, namespace: str, tasks_module: Any
) -> None:
    kube: KubeEnvironment = operator.kube
    name = f"scale-{uuid.uuid4().hex[:8]}"
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
            concurrency=20,
            pool="asyncio",
            autoscaling={
                "minReplicas": 0,
                "maxReplicas": 4,
                "targetBacklogPerReplica": 100,
                "scaleDownStabilization": "5s",
                "idleBeforeZero": "10s",
                "pollInterval": "1s",
            },
        ),
    ]
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))
    wait(lambda: replicas(kube, namespace, name) == 0, "an idle pool at zero replicas")

    app, square = tasks_module.app, tasks_module.square
    results = app.send_many([square.s(i).set(queue=name) for i in range(2000)])
    wait(lambda: replicas(kube, namespace, name) == 4, "scale up to 4", timeout=15)

    values = [r.get(timeout=180) for r in results]
    assert values == [i * i for i in range(2000)]
    assert {r.state for r in results} == {"SUCCESS"}

    wait(lambda: replicas(kube, namespace, name) == 0, "back to zero", timeout=90)
    messages = scale_messages(kube, namespace, name)
    assert any("scale up from 0 to 4" in m for m in messages), messages
    assert any("scale to zero" in m for m in messages), messages
