"""Replacing a worker Deployment against the real API server."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes import client

from celeriac.operator.kube import DeploymentConflictError, Deployments

pytestmark = pytest.mark.e2e


def _deployment(namespace: str, owner_uid: str, args: list[str]) -> dict[str, Any]:
    labels = {"app": "replace-test"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "replace-test",
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "owner",
                    "uid": owner_uid,
                    "controller": True,
                },
            ],
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "w", "image": "celeriac/none", "args": args}]},
            },
        },
    }


async def test_a_replace_that_lost_the_race_for_the_resource_version_is_retried(
    kube_client: Any, namespace: str
) -> None:
    """The Deployment changed after it was read (as the Deployment controller's status
    writes do all the time): the replace is read again and retried, not given up on."""
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    deployments = Deployments(kube_client)
    first = await deployments.apply(_deployment(namespace, owner.metadata.uid, ["1"]), None,
                                    owner.metadata.uid)  # fmt: skip
    apps.patch_namespaced_deployment(
        "replace-test", namespace, {"metadata": {"annotations": {"touched": "yes"}}}
    )
    stale = copy.deepcopy(first)
    applied = await deployments.apply(
        _deployment(namespace, owner.metadata.uid, ["2"]), stale, owner.metadata.uid
    )
    assert applied["spec"]["template"]["spec"]["containers"][0]["args"] == ["2"]
    assert int(applied["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])

    # A Deployment controlled by something else is never replaced.
    with pytest.raises(DeploymentConflictError, match="not controlled by this WorkerPool"):
        await deployments.apply(_deployment(namespace, "another-uid", ["3"]), applied, "other")


async def test_a_replace_keeps_a_scale_made_after_the_read(
    kube_client: Any, namespace: str
) -> None:
    """The autoscaler scaled the Deployment while the change handler was building its
    replacement (a new leader resuming): the replace keeps the new count, and a fixed
    pool's replace still sets its own."""
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    uid = owner.metadata.uid
    deployments = Deployments(kube_client)
    first = await deployments.apply(_deployment(namespace, uid, ["1"]), None, uid)
    apps.patch_namespaced_deployment_scale("replace-test", namespace, {"spec": {"replicas": 3}})
    applied = await deployments.apply(
        _deployment(namespace, uid, ["2"]), copy.deepcopy(first), uid, keep_replicas=True
    )
    assert applied["spec"]["replicas"] == 3
    assert applied["spec"]["template"]["spec"]["containers"][0]["args"] == ["2"]

    fixed = await deployments.apply(_deployment(namespace, uid, ["3"]), applied, uid)
    assert fixed["spec"]["replicas"] == 0
