"""The worker Deployment built for a WorkerPool."""

from __future__ import annotations

from typing import Any

import pytest

from celeriac.operator import manifests
from celeriac.operator.manifests import PoolRef, worker_deployment
from celeriac.protocol.resources import WorkerPoolSpec

POOL = PoolRef(name="emails", namespace="apps", uid="1234-abcd")
NATS = "nats://nats.celeriac:4222"


def spec(**extra: Any) -> WorkerPoolSpec:
    return WorkerPoolSpec.model_validate(
        {"queues": ["emails", "reports"], "app": "shop.tasks:app", "image": "shop:1", **extra}
    )


def container(dep: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return result


def env_of(dep: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(dep)["env"]}


def build(**extra: Any) -> dict[str, Any]:
    return worker_deployment(POOL, spec(**extra), nats_url=NATS, replicas=2)


def test_identity_owner_and_labels() -> None:
    dep = build()
    meta = dep["metadata"]
    assert meta["name"] == "emails-workers"
    assert meta["namespace"] == "apps"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "celeriac.io/v1alpha1",
            "kind": "WorkerPool",
            "name": "emails",
            "uid": "1234-abcd",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert dep["spec"]["selector"] == {"matchLabels": {"celeriac.io/pool": "emails"}}
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["celeriac.io/pool"] == "emails"
    assert labels["app.kubernetes.io/instance"] == "emails"
    assert labels["app.kubernetes.io/managed-by"] == "celeriac-operator"
    assert dep["spec"]["replicas"] == 2
    assert manifests.selector_string("emails") == "celeriac.io/pool=emails"


@pytest.mark.parametrize(
    ("extra", "command_tail"),
    [
        ({}, ["-c", "10", "--pool", "asyncio", "--drain-timeout", "25"]),
        ({"concurrency": 3, "pool": "processes"},
         ["-c", "3", "--pool", "processes", "--drain-timeout", "25"]),
        ({"pool": "threads", "terminationGracePeriodSeconds": 60},
         ["-c", "10", "--pool", "threads", "--drain-timeout", "55"]),
    ],
)  # fmt: skip
def test_command(extra: dict[str, Any], command_tail: list[str]) -> None:
    """The drain timeout follows the pod's grace period, leaving time to exit cleanly."""
    assert container(build(**extra))["command"] == [
        "celeriac", "worker", "-A", "shop.tasks:app", "-Q", "emails,reports", *command_tail,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, {"CELERIAC_NATS_URL": NATS, "CELERIAC_DECLARE_QUEUES": "0"}),
        ({"env": [{"name": "DEBUG", "value": "1"}]}, {"DEBUG": "1"}),
        # A user variable with Celeriac's name replaces Celeriac's.
        ({"env": [{"name": "CELERIAC_NATS_URL", "value": "nats://x:1"}]},
         {"CELERIAC_NATS_URL": "nats://x:1"}),
        ({"env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
         {"S": {"secretKeyRef": {"name": "s", "key": "k"}}}),
        ({"nats": {"credentialsSecret": "creds"}},
         {"CELERIAC_NATS_AUTH_DIR": "/etc/celeriac/nats"}),
    ],
)  # fmt: skip
def test_environment(extra: dict[str, Any], expected: dict[str, Any]) -> None:
    env = env_of(build(**extra))
    assert {k: env.get(k) for k in expected} == expected
    names = [e["name"] for e in container(build(**extra))["env"]]
    assert len(names) == len(set(names))


def test_probes_port_and_security() -> None:
    c = container(build())
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}
    assert c["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert c["securityContext"] == {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    pod = build()["spec"]["template"]["spec"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert pod["securityContext"]["runAsNonRoot"] is True


POD_FIELDS = [
    ({"serviceAccountName": "workers"}, "serviceAccountName", "workers"),
    ({"terminationGracePeriodSeconds": 90}, "terminationGracePeriodSeconds", 90),
    ({"nodeSelector": {"disk": "ssd"}}, "nodeSelector", {"disk": "ssd"}),
    (
        {"tolerations": [{"key": "k", "operator": "Exists"}]},
        "tolerations",
        [{"key": "k", "operator": "Exists"}],
    ),
    ({"affinity": {"nodeAffinity": {"x": 1}}}, "affinity", {"nodeAffinity": {"x": 1}}),
    ({"securityContext": {"runAsUser": 5}}, "securityContext", {"runAsUser": 5}),
]


@pytest.mark.parametrize(("extra", "field", "value"), POD_FIELDS)
def test_pod_fields(extra: dict[str, Any], field: str, value: Any) -> None:
    assert build(**extra)["spec"]["template"]["spec"][field] == value


def test_pod_fields_absent_by_default() -> None:
    pod = build()["spec"]["template"]["spec"]
    for field in ("serviceAccountName", "nodeSelector", "tolerations", "affinity"):
        assert field not in pod
    assert pod["terminationGracePeriodSeconds"] == 30


def test_resources_env_from_and_pull_policy() -> None:
    c = container(
        build(
            resources={
                "limits": {"cpu": 1.5, "memory": "512Mi"},
                "requests": {"cpu": "500m", "memory": 256},
            },
            envFrom=[{"configMapRef": {"name": "cfg"}}],
            imagePullPolicy="Never",
        )
    )
    # Amounts go to the Deployment as text, as Kubernetes clients send them.
    assert c["resources"] == {
        "limits": {"cpu": "1.5", "memory": "512Mi"},
        "requests": {"cpu": "500m", "memory": "256"},
    }
    assert c["envFrom"] == [{"configMapRef": {"name": "cfg"}}]
    assert c["imagePullPolicy"] == "Never"
    assert c["image"] == "shop:1"


def test_pod_labels_cannot_override_the_selector() -> None:
    dep = build(podLabels={"celeriac.io/pool": "other", "team": "a"})
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["celeriac.io/pool"] == "emails"
    assert labels["team"] == "a"


def test_credentials_secret_is_mounted() -> None:
    dep = build(nats={"credentialsSecret": "nats-creds"})
    pod = dep["spec"]["template"]["spec"]
    assert {"name": "nats-creds", "secret": {"secretName": "nats-creds"}} in pod["volumes"]
    mounts = container(dep)["volumeMounts"]
    assert {"name": "nats-creds", "mountPath": "/etc/celeriac/nats", "readOnly": True} in mounts


def test_signing_keys_secret_is_mounted_as_one_file() -> None:
    dep = build(signingKeysSecret={"name": "task-signing", "key": "current"})
    pod = dep["spec"]["template"]["spec"]
    volume = {
        "name": "signing-keys",
        "secret": {"secretName": "task-signing", "items": [{"key": "current", "path": "keys"}]},
    }
    assert volume in pod["volumes"]
    mounts = container(dep)["volumeMounts"]
    assert {
        "name": "signing-keys",
        "mountPath": "/etc/celeriac/signing",
        "readOnly": True,
    } in mounts
    assert env_of(dep)["CELERIAC_SIGNING_KEYS_FILE"] == "/etc/celeriac/signing/keys"
    # The key defaults to "keys"; without the field nothing is mounted or set.
    default = build(signingKeysSecret={"name": "task-signing"})["spec"]["template"]["spec"]
    assert default["volumes"][-1]["secret"]["items"] == [{"key": "keys", "path": "keys"}]
    plain = build()
    assert "CELERIAC_SIGNING_KEYS_FILE" not in env_of(plain)
    assert all(v["name"] != "signing-keys" for v in plain["spec"]["template"]["spec"]["volumes"])


@pytest.mark.parametrize("secret", [{"name": "Bad_Name"}, {"name": "ok", "key": "a/b"}, {}])
def test_signing_keys_secret_is_validated(secret: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"signingKeysSecret|signing_keys_secret"):
        spec(signingKeysSecret=secret)


def test_a_spec_change_changes_the_template() -> None:
    assert build()["spec"]["template"] != build(concurrency=5)["spec"]["template"]
    assert build()["spec"]["template"] == build()["spec"]["template"]


@pytest.mark.parametrize(
    ("grace", "drain"), [(0, 1.0), (3, 1.0), (6, 1.0), (7, 2.0), (30, 25.0), (3600, 3595.0)]
)
def test_drain_timeout_leaves_a_margin_of_the_grace_period(grace: int, drain: float) -> None:
    assert manifests.drain_timeout(grace) == drain


@pytest.mark.parametrize(
    ("log_format", "user_env", "expected"),
    [
        ("text", [], None),  # the worker's default: the template stays as it was
        ("json", [], "json"),
        ("json", [{"name": "CELERIAC_LOG_FORMAT", "value": "text"}], "text"),  # the pool's own
    ],
)
def test_workers_log_in_the_operators_format(
    log_format: str, user_env: list[dict[str, str]], expected: str | None
) -> None:
    dep = worker_deployment(
        POOL, spec(env=user_env), nats_url=NATS, replicas=1, log_format=log_format
    )
    assert env_of(dep).get("CELERIAC_LOG_FORMAT") == expected
    names = [e["name"] for e in container(dep)["env"]]
    assert names.count("CELERIAC_LOG_FORMAT") == (0 if expected is None else 1)
