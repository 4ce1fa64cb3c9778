"""The chart on the real control plane: install, the operator's permissions, upgrade, uninstall."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from celeriac_devenv.chart import CHART_DIR, Release, install, uninstall
from celeriac_devenv.cluster import KubeEnvironment

from tests.helm.chart_support import exists, manifest_objects
from tests.support import wait_until

pytestmark = pytest.mark.e2e

CRDS = ("taskqueues.celeriac.io", "workerpools.celeriac.io", "taskschedules.celeriac.io")


def _release(prefix: str) -> Release:
    suffix = uuid.uuid4().hex[:6]
    return Release(name=f"{prefix}-{suffix}", namespace=f"{prefix}-{suffix}")


def _deployment(env: KubeEnvironment, release: Release) -> dict[str, Any]:
    out = env.kubectl(
        "get", "deployment", release.deployment, "-n", release.namespace, "-o", "json"
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_install_creates_every_object(kube_env: KubeEnvironment) -> None:
    release = _release("inst")
    values = {"natsServer": {"enabled": True, "persistence": {"enabled": False}}}
    try:
        notes = install(kube_env, release, values)
        objects = manifest_objects(kube_env, release.name, release.namespace)
        kinds = {kind for kind, _, _ in objects}
        assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                "Deployment", "StatefulSet", "Service", "ConfigMap"} <= kinds  # fmt: skip
        missing = [
            o for o in objects if not exists(kube_env, o[0], o[1] or release.namespace, o[2])
        ]
        assert missing == []
        for crd in CRDS:
            assert exists(kube_env, "crd", "", crd)
        kube_env.kubectl(
            "rollout", "status", f"deployment/{release.deployment}", "-n", release.namespace,
            "--timeout=60s",
        )  # fmt: skip
        assert "kubectl apply -f examples/taskqueue.yaml" in notes
        assert f"nats://{release.fullname}-nats.{release.namespace}.svc:4222" in notes
    finally:
        uninstall(kube_env, release)


def test_upgrade_with_changed_values_rolls_out(kube_env: KubeEnvironment) -> None:
    release = _release("upg")
    team = f"{release.namespace}-team"
    kube_env.kubectl("create", "namespace", team)
    try:
        install(kube_env, release, {"nats": {"url": str(kube_env.nats_url)}})
        before = _deployment(kube_env, release)
        assert exists(kube_env, "clusterrole", "", release.fullname)
        # The documented CRD upgrade (Helm never upgrades crds/) applies cleanly.
        kube_env.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", str(CHART_DIR / "crds")
        )
        install(
            kube_env, release,
            {"operator": {"logLevel": "debug", "watchNamespaces": [team]}},
            upgrade=True,
        )  # fmt: skip
        after = _deployment(kube_env, release)
        assert after["metadata"]["generation"] > before["metadata"]["generation"]
        args = after["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--debug" in args and f"--namespace={team}" in args
        kube_env.kubectl(
            "rollout", "status", f"deployment/{release.deployment}", "-n", release.namespace,
            "--timeout=60s",
        )  # fmt: skip
        status = _deployment(kube_env, release)["status"]
        assert status["observedGeneration"] == after["metadata"]["generation"]
        assert status["updatedReplicas"] == status["readyReplicas"] == 1
        # RBAC follows the values: the cluster-wide role gave way to a Role in the team's namespace.
        assert not exists(kube_env, "clusterrole", "", release.fullname)
        assert exists(kube_env, "role", team, release.fullname)
        history = json.loads(
            kube_env.helm("history", release.name, "-n", release.namespace, "-o", "json").stdout
        )
        assert [h["revision"] for h in history] == [1, 2]
    finally:
        uninstall(kube_env, release)
        kube_env.kubectl("delete", "namespace", team, "--wait=false")


def test_uninstall_removes_everything_but_crds_and_queues(kube_env: KubeEnvironment) -> None:
    release = _release("uninst")
    install(kube_env, release, {"nats": {"url": str(kube_env.nats_url)}})
    objects = manifest_objects(kube_env, release.name, release.namespace)
    queue = {
        "apiVersion": "celeriac.io/v1alpha1",
        "kind": "TaskQueue",
        "metadata": {"name": "kept", "namespace": release.namespace},
        "spec": {},
    }
    kube_env.kubectl("apply", "-f", "-", input=json.dumps(queue))
    uninstall(kube_env, release)
    try:

        def gone() -> bool:
            return not any(exists(kube_env, k, ns or release.namespace, n) for k, ns, n in objects)

        wait_until(gone, timeout=60, what="every object of the release to go", interval=0.5)
        for crd in CRDS:
            assert exists(kube_env, "crd", "", crd)
        assert exists(kube_env, "taskqueue", release.namespace, "kept")
    finally:
        kube_env.kubectl("delete", "namespace", release.namespace, "--wait=false")
