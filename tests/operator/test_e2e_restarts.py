"""The operator converges after being killed mid-reconcile, and survives an API server
restart: its watches resume and new resources are reconciled."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml
from celeriac_devenv.cluster import KubeEnvironment

from tests.support import wait_until

pytestmark = pytest.mark.e2e

COUNT = 100  # TaskQueues, and as many WorkerPools: 200 resources


def _objects(prefix: str) -> list[dict[str, Any]]:
    queues = [
        {
            "apiVersion": "celeriac.io/v1alpha1",
            "kind": "TaskQueue",
            "metadata": {"name": f"{prefix}-{i}"},
            "spec": {"deletionPolicy": "Delete"},
        }
        for i in range(COUNT)
    ]
    pools = [
        {
            "apiVersion": "celeriac.io/v1alpha1",
            "kind": "WorkerPool",
            "metadata": {"name": f"{prefix}-{i}"},
            "spec": {"queues": [f"{prefix}-{i}"], "app": "m", "image": "i", "replicas": 0},
        }
        for i in range(COUNT)
    ]
    return queues + pools


def _ready_queues(kube: KubeEnvironment, namespace: str) -> int:
    out = kube.kubectl("get", "tq", "-n", namespace, "-o", "json").stdout
    ready = 0
    for item in json.loads(out)["items"]:
        conditions = item.get("status", {}).get("conditions", [])
        ready += any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return ready


def _deployments(kube: KubeEnvironment, namespace: str) -> int:
    out = kube.kubectl("get", "deployments", "-n", namespace, "-o", "name").stdout
    return len(out.split())


def test_killed_mid_reconcile_the_operator_converges(operator: Any, namespace: str) -> None:
    kube = operator.kube
    prefix = namespace.removeprefix("t-")[:6]
    started = time.monotonic()
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(_objects(prefix)))
    done_before = wait_until(
        lambda: _ready_queues(kube, namespace) or None,
        timeout=120, what="the first TaskQueues Ready", interval=0.1,
    )  # fmt: skip
    operator.kill()
    killed = time.monotonic()
    operator.start()
    wait_until(
        lambda: _ready_queues(kube, namespace) == COUNT and _deployments(kube, namespace) == COUNT,
        timeout=300, what=f"{COUNT} TaskQueues Ready and {COUNT} Deployments", interval=1.0,
    )  # fmt: skip
    converged = time.monotonic()
    print(
        f"\n{2 * COUNT} resources: {done_before} queue(s) Ready when the operator was killed "
        f"{killed - started:.1f} s in; all converged {converged - killed:.1f} s after the kill"
    )


def test_an_api_server_restart_is_survived(operator: Any, namespace: str) -> None:
    """The operator keeps going, or, if the restart outlasted its Lease, exits 1 as
    kube-controller-manager does and is restarted like a pod's container; either way a
    TaskQueue created after the restart is reconciled."""
    kube = operator.kube
    kube.restart("kube-apiserver")
    restarted = time.monotonic()
    manifest = {
        "apiVersion": "celeriac.io/v1alpha1",
        "kind": "TaskQueue",
        "metadata": {"name": "after-restart"},
        "spec": {"queue": f"after-{namespace.removeprefix('t-')}", "deletionPolicy": "Delete"},
    }
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))
    exits: list[int] = []

    def reconciled() -> bool:
        process = operator.process
        if process is not None and not process.alive():
            exits.append(process.popen.returncode)
            operator.process = None
            operator.start()  # what the kubelet does for a container that exited
        return _ready_queues(kube, namespace) == 1

    wait_until(reconciled, timeout=120, what="a TaskQueue created after the restart", interval=0.5)
    print(
        f"\nreconciled {time.monotonic() - restarted:.1f} s after the API server restart; "
        f"operator exits meanwhile: {exits or 'none'}"
    )
    assert all(code == 1 for code in exits), exits  # a lost Lease, said so; never a crash
