"""The WorkerPools section against the real API server: the dashboard, given a
kubeconfig, lists a WorkerPool with the scaling decision in its status."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from celeriac_devenv.cluster import KubeEnvironment

from celeriac.dashboard.app import build
from celeriac.dashboard.settings import settings_from

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
POOL = """apiVersion: celeriac.io/v1alpha1
kind: WorkerPool
metadata: {name: emails}
spec: {queues: [emails], app: "shop.tasks:app", image: "example/shop:1.0"}
"""


@pytest.fixture
def namespace(kube_env: KubeEnvironment) -> Iterator[str]:
    """A fresh namespace with the CRDs installed, deleted afterwards (without waiting)."""
    kube_env.kubectl("apply", "-f", str(ROOT / "crds"))
    kube_env.wait_established("workerpools.celeriac.io")
    name = f"dash-{uuid.uuid4().hex[:8]}"
    kube_env.kubectl("create", "namespace", name)
    yield name
    kube_env.kubectl("delete", "namespace", name, "--wait=false", check=False)


async def test_pools_show_the_scaling_decision(
    kube_env: KubeEnvironment, namespace: str, nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube_env.kubectl("apply", "-n", namespace, "-f", "-", input=POOL)
    status = {"backlog": 40, "desiredReplicas": 3, "readyReplicas": 2,
              "lastScaleReason": "backlog 40 over 16 per replica",
              "lastScaleTime": "2026-01-01T12:00:00Z"}  # fmt: skip
    kube_env.kubectl(
        "patch", "workerpool", "emails", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(kube_env.kubeconfig))
    app = build(settings_from(["--nats-url", nats_url], {}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as http:
            shown = (await http.get("/api/pools")).json()
    assert shown["connected"] is True, shown
    [pool] = [p for p in shown["pools"] if p["namespace"] == namespace]
    assert pool == {
        "namespace": namespace, "name": "emails", "backlog": 40, "in_flight": None,
        "desired": 3, "ready": 2, "replicas": None,
        "last_scale_reason": "backlog 40 over 16 per replica",
        "last_scale_time": "2026-01-01T12:00:00Z",
    }  # fmt: skip
