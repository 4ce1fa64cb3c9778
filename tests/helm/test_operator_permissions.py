"""The operator, run with the chart's ServiceAccount token, can do all its work and no more.

For each RBAC mode of the chart (cluster-wide, namespaced) the operator runs as a
local process with a kubeconfig holding a token of the chart's ServiceAccount:
it creates a queue's streams, a pool's Deployment, scales it on backlog (a real
worker runs a real task), posts Events, removes finalizers on deletion, and holds
its Lease. Anything outside the role is refused by the API server.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celeriac_devenv.chart import (
    REPO_ROOT,
    LocalOperator,
    Release,
    install,
    service_account_kubeconfig,
    start_operator,
    uninstall,
)
from celeriac_devenv.cluster import KubeEnvironment

from celeriac.app import Celeriac
from tests.helm.chart_support import exists
from tests.support import wait_until

pytestmark = pytest.mark.e2e

EXAMPLE_APPS = REPO_ROOT / "examples" / "apps"


def _get(env: KubeEnvironment, ns: str, *what: str) -> Any:
    proc = env.kubectl("get", "-n", ns, *what, "-o", "json", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    return json.loads(proc.stdout)


def _condition(obj: Any, type_: str) -> str | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return str(cond["status"])
    return None


def _apply(env: KubeEnvironment, ns: str, kind: str, name: str, spec: dict[str, Any]) -> None:
    obj = {"apiVersion": "celeriac.io/v1alpha1", "kind": kind, "metadata": {"name": name}}
    env.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({**obj, "spec": spec}))


def _pool_spec(queue: str) -> dict[str, Any]:
    return {
        "queues": [queue],
        "app": "shop.tasks:app",
        "image": "ghcr.io/example/shop:1.0",
        "concurrency": 4,
        # Locally the pod runner runs the worker from this checkout: point it at the examples.
        "env": [
            {"name": "PYTHONPATH", "value": str(EXAMPLE_APPS)},
            {"name": "SHOP_MAIL_LATENCY", "value": "0.01"},
        ],
        "terminationGracePeriodSeconds": 5,
        "autoscaling": {
            "minReplicas": 0,
            "maxReplicas": 2,
            "pollInterval": "1s",
            "scaleDownStabilization": "2s",
            "idleBeforeZero": "3s",
        },
    }


def _can(env: KubeEnvironment, account: str, *args: str) -> bool:
    proc = env.kubectl("auth", "can-i", "--as", account, *args, check=False)
    return proc.stdout.strip() == "yes"


def _submit_one(nats_url: str, queue: str) -> Any:
    client = Celeriac("permissions-test", nats_url=nats_url, declare_queues=False)
    try:
        items = [{"price_cents": 300, "quantity": 3}]
        result = client.send_task(
            "shop.tasks.send_receipt", args=[7, "x@example.com", items], queue=queue
        )
        return result.get(timeout=90)
    finally:
        client.close()


@pytest.fixture(params=["cluster-wide", "namespaced"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def setup(
    kube_env: KubeEnvironment, mode: str, tmp_path: Path
) -> Iterator[tuple[Release, str, LocalOperator, Path]]:
    """A release in its own namespace, a team namespace, and the operator running as the SA."""
    suffix = uuid.uuid4().hex[:6]
    release = Release(name=f"perm-{suffix}", namespace=f"perm-{suffix}")
    team = f"team-{suffix}"
    kube_env.kubectl("create", "namespace", team)
    values: dict[str, Any] = {"nats": {"url": str(kube_env.nats_url)}}
    if mode == "namespaced":
        values["operator"] = {"watchNamespaces": [team]}
    install(kube_env, release, values)
    sa_config = service_account_kubeconfig(kube_env, release, tmp_path / "operator.kubeconfig")
    # Watching only the team namespace keeps this operator off other tests' objects;
    # in cluster-wide mode its ClusterRole still decides what it may do there.
    operator = start_operator(
        kube_env, release, sa_config, nats_url=str(kube_env.nats_url),
        watch_namespaces=[team], log_dir=tmp_path,
    )  # fmt: skip
    try:
        yield release, team, operator, sa_config
    finally:
        for kind in ("workerpools", "taskqueues", "taskschedules"):
            kube_env.kubectl("delete", kind, "--all", "-n", team, "--timeout=60s", check=False)
        operator.stop()
        uninstall(kube_env, release)
        kube_env.kubectl("delete", "namespace", team, release.namespace, "--wait=false")


def test_operator_does_its_work_as_the_service_account(
    kube_env: KubeEnvironment, setup: tuple[Release, str, LocalOperator, Path]
) -> None:
    release, team, operator, _ = setup
    queue = "perm-orders"
    _apply(kube_env, team, "TaskQueue", queue, {"deletionPolicy": "Delete"})
    _apply(kube_env, team, "WorkerPool", "shop", _pool_spec(queue))

    def queue_ready() -> bool:
        return _condition(_get(kube_env, team, "taskqueue", queue), "Ready") == "True"

    wait_until(queue_ready, timeout=60, what="the TaskQueue to be Ready", alive=operator.process)
    wait_until(
        lambda: _get(kube_env, team, "deployment", "shop-workers"),
        timeout=60, what="the pool's Deployment", alive=operator.process,
    )  # fmt: skip
    # Backlog scales the pool from zero; a real worker sends the receipt.
    receipt = _submit_one(str(kube_env.nats_url), queue)
    assert receipt["total_cents"] == 900
    events = _get(kube_env, team, "events", "--field-selector", "involvedObject.name=shop")
    assert any(e["reason"] == "Scaled" for e in events["items"])
    wp = _get(kube_env, team, "workerpool", "shop")
    assert "celeriac.io/finalizer" in wp["metadata"]["finalizers"]

    def scaled_to_zero() -> bool:
        return int(_get(kube_env, team, "deployment", "shop-workers")["spec"]["replicas"]) == 0

    wait_until(scaled_to_zero, timeout=60, what="scale back to zero", alive=operator.process)
    # Deleting works through the operator's finalizer (deletionPolicy Delete drops streams).
    kube_env.kubectl("delete", "workerpool", "shop", "-n", team, "--timeout=60s")
    kube_env.kubectl("delete", "taskqueue", queue, "-n", team, "--timeout=60s")
    lease = _get(kube_env, release.namespace, "lease", release.lease)
    assert lease["spec"]["holderIdentity"]
    log = operator.process.log_path.read_text()
    refused = [line for line in log.splitlines() if "Forbidden" in line or " 403" in line]
    assert refused == [], "\n".join(refused)


def test_actions_outside_the_role_are_forbidden(
    kube_env: KubeEnvironment, mode: str, setup: tuple[Release, str, LocalOperator, Path]
) -> None:
    release, team, _, sa_config = setup
    account = f"system:serviceaccount:{release.namespace}:{release.service_account}"
    allowed = [
        ("patch", "workerpools.celeriac.io", "-n", team),
        ("patch", "taskqueues.celeriac.io", "--subresource=status", "-n", team),
        ("create", "deployments.apps", "-n", team),
        ("patch", "deployments.apps", "--subresource=scale", "-n", team),
        ("create", "events", "-n", team),
        ("update", f"leases.coordination.k8s.io/{release.lease}", "-n", release.namespace),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
        ("list", "namespaces"),
    ]
    denied = [
        ("delete", "deployments.apps", "-n", team),
        ("delete", "workerpools.celeriac.io", "-n", team),
        ("get", "secrets", "-n", team),
        ("create", "pods", "-n", team),
        ("list", "nodes"),
        ("delete", "namespaces"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("update", "leases.coordination.k8s.io/someone-else", "-n", release.namespace),
        ("create", "rolebindings.rbac.authorization.k8s.io", "-n", team),
    ]
    if mode == "namespaced":
        denied += [
            ("list", "workerpools.celeriac.io", "-n", "default"),
            ("list", "workerpools.celeriac.io", "--all-namespaces"),
        ]
    assert [a for a in allowed if not _can(kube_env, account, *a)] == []
    assert [d for d in denied if _can(kube_env, account, *d)] == []
    # And a real call with the operator's own credentials is refused.
    proc = kube_env.kubectl(
        "--kubeconfig", str(sa_config), "get", "secrets", "-n", team, check=False
    )
    assert proc.returncode != 0 and "Forbidden" in proc.stderr
    assert exists(kube_env, "namespace", "", team)
