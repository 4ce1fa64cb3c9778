"""The CRDs on the real API server: invalid specs are rejected at apply time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from celeriac_devenv.cluster import KubeEnvironment

from celeriac.operator import kubeschemas
from tests.operator.kubeobjects import get
from tests.support import wait_until

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
INVALID = sorted((HERE / "invalid").glob("*.yaml"))


def expected_fragment(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: ...'"
    return first.removeprefix("# expect: ")


def test_there_are_enough_invalid_examples() -> None:
    assert len(INVALID) >= 12


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_spec_is_rejected_naming_the_field(
    crds: KubeEnvironment, namespace: str, path: Path
) -> None:
    proc = crds.kubectl("apply", "-n", namespace, "-f", str(path), check=False)
    assert proc.returncode != 0, f"{path.name} was accepted"
    assert expected_fragment(path) in proc.stderr, proc.stderr


@pytest.mark.parametrize("name", ["taskqueue.yaml", "workerpool.yaml", "taskschedule.yaml"])
def test_examples_are_valid(crds: KubeEnvironment, namespace: str, name: str) -> None:
    crds.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(ROOT / "examples" / name))


def test_defaults_are_filled_in(crds: KubeEnvironment, namespace: str) -> None:
    manifest = "apiVersion: celeriac.io/v1alpha1\nkind: TaskQueue\nmetadata: {name: plain}\n"
    out = crds.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", "-o",
        "jsonpath={.spec.delivery.ackWait} {.spec.deletionPolicy} {.spec.maxAge}",
        input=manifest,
    ).stdout  # fmt: skip
    assert out == "30s Retain 7d"


def test_queue_name_is_immutable(crds: KubeEnvironment, namespace: str) -> None:
    manifest = (
        "apiVersion: celeriac.io/v1alpha1\nkind: TaskQueue\n"
        "metadata: {name: fixed}\nspec: {queue: %s}\n"
    )
    crds.kubectl("apply", "-n", namespace, "-f", "-", input=manifest % "first")
    proc = crds.kubectl("apply", "-n", namespace, "-f", "-", input=manifest % "second", check=False)
    assert proc.returncode != 0
    assert "spec.queue is immutable" in proc.stderr


def test_writing_the_name_as_the_queue_changes_nothing(
    crds: KubeEnvironment, namespace: str
) -> None:
    plain = "apiVersion: celeriac.io/v1alpha1\nkind: TaskQueue\nmetadata: {name: payouts}\n"
    crds.kubectl("apply", "-n", namespace, "-f", "-", input=plain)
    crds.kubectl("apply", "-n", namespace, "-f", "-", input=plain + "spec: {queue: payouts}\n")
    proc = crds.kubectl(
        "apply", "-n", namespace, "-f", "-", input=plain + "spec: {queue: other}\n", check=False
    )
    assert proc.returncode != 0 and "spec.queue is immutable" in proc.stderr


def test_stored_kube_schemas_match_the_api_server(crds: KubeEnvironment) -> None:
    """The pod-field schemas in the CRD are the running API server's own."""
    live = json.loads(crds.kubectl("get", "--raw", "/openapi/v3/api/v1").stdout)
    stored = json.loads(kubeschemas.STORED.read_text())
    assert kubeschemas.extract(live) == stored, (
        "celeriac/protocol/kubeschemas.json is out of date: run "
        "`kubectl get --raw /openapi/v3/api/v1 | python -m celeriac.operator.kubeschemas -` "
        "then `python -m celeriac.operator.crdgen`"
    )


def test_fractions_are_quantities_as_in_a_pod(operator: Any, namespace: str) -> None:
    kube: KubeEnvironment = operator.kube
    manifest = (
        "apiVersion: celeriac.io/v1alpha1\nkind: WorkerPool\nmetadata: {name: half}\n"
        "spec:\n  queues: [emails]\n  app: shop.tasks\n  image: example/shop:1\n"
        "  replicas: 0\n  resources:\n    requests: {cpu: 0.5, memory: 0.5Gi}\n"
        "    limits: {cpu: 1.5, memory: '1Gi'}\n"
    )
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
    deployment = wait_until(
        lambda: get(kube, namespace, "deployment", "half-workers"),
        timeout=60,
        what="the pool's Deployment",
    )
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    # The API server keeps Kubernetes' canonical form of each amount.
    assert resources == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "1500m", "memory": "1Gi"},
    }
