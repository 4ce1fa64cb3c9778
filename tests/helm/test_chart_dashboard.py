"""The chart's optional dashboard, rendered without a cluster: objects, auth, RBAC, notes."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from celeriac_devenv.chart import CHART_DIR, set_flags

import celeriac
from tests.helm.chart_support import by_kind, helm, operator_deployment, render, render_error

NATS = {"nats": {"url": "nats://nats.nats.svc:4222"}}
ON: dict[str, Any] = {**NATS, "dashboard": {"enabled": True}}


def dashboard_values(**settings: Any) -> dict[str, Any]:
    """The chart's values with the dashboard on and ``settings`` in its block."""
    return {**NATS, "dashboard": {"enabled": True, **settings}}


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in by_kind(objects).get(kind, []) if o["metadata"]["name"] == name]
    return found


def dashboard_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        o
        for o in objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "dashboard"
    ]


def pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = named(objects, "Deployment", "demo-celeriac-dashboard")["spec"]
    return spec


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = pod(objects)["template"]["spec"]["containers"][0]
    return found


def env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects)["env"]}


def test_off_by_default_renders_nothing_of_it() -> None:
    objects = render(NATS)
    assert dashboard_objects(objects) == []
    assert not [o for o in objects if "dashboard" in o["metadata"]["name"]]


# name -> values; every case must lint strictly and render the dashboard's objects.
CASES: dict[str, dict[str, Any]] = {
    "on": ON,
    "token": dashboard_values(auth={"token": "s3cret"}),
    "existing-secret": dashboard_values(auth={"existingSecret": "dash-users"}),
    "read-only": dashboard_values(readOnly=True),
    "own-image": dashboard_values(image={"repository": "example.com/dash", "tag": "1.2"}),
    "namespaced-operator": {**ON, "operator": {"watchNamespaces": ["team-a"]}},
    "bundled-nats-credentials": {
        "natsServer": {"enabled": True},
        "nats": {"credentials": {"secretName": "nats-creds"}},
        "dashboard": {"enabled": True, "service": {"port": 80}},
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_lint_strict(case: str) -> None:
    proc = helm("lint", "--strict", str(CHART_DIR), *set_flags(CASES[case]))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_on_renders_a_deployment_service_and_reader_account(case: str) -> None:
    objects = render(CASES[case])
    kinds = sorted(o["kind"] for o in dashboard_objects(objects))
    expected = ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    if CASES[case]["dashboard"].get("auth", {}).get("token"):
        expected = sorted([*expected, "Secret"])
    assert kinds == expected
    for obj in dashboard_objects(objects):
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo"
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "celeriac-system"
    spec = pod(objects)
    assert spec["replicas"] == 1
    template = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert template["spec"]["serviceAccountName"] == "demo-celeriac-dashboard"
    c = container(objects)
    assert c["command"] == ["celeriac", "dashboard", "--host", "0.0.0.0", "--port", "8787"]
    assert c["ports"] == [{"name": "http", "containerPort": 8787, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # The operator's hardening: unprivileged, read-only root, a writable /tmp.
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    # The Service reaches the pod: same selector, the container's named port.
    service = named(objects, "Service", "demo-celeriac-dashboard")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    [port] = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    assert port["port"] == CASES[case]["dashboard"].get("service", {}).get("port", 8787)


def test_nats_url_and_credentials_come_as_the_operators_do() -> None:
    values = {
        "nats": {"url": "tls://nats:4222", "credentials": {"secretName": "nats-creds"}},
        "dashboard": {"enabled": True},
    }
    objects = render(values)
    op = operator_deployment(objects)["spec"]["template"]["spec"]
    op_env = {e["name"]: e.get("value") for e in op["containers"][0]["env"]}
    dash_env = env(objects)
    for name in ("CELERIAC_NATS_URL", "CELERIAC_NATS_AUTH_DIR"):
        assert dash_env[name] == op_env[name]
    assert dash_env["CELERIAC_NATS_URL"] == "tls://nats:4222"
    mount = next(m for m in container(objects)["volumeMounts"] if m["name"] == "nats-credentials")
    assert mount == {
        "name": "nats-credentials",
        "mountPath": "/etc/celeriac/nats",
        "readOnly": True,
    }
    volumes = pod(objects)["template"]["spec"]["volumes"]
    assert {"name": "nats-credentials", "secret": {"secretName": "nats-creds"}} in volumes


def test_bundled_nats_url_and_no_credentials() -> None:
    objects = render({"natsServer": {"enabled": True}, "dashboard": {"enabled": True}})
    dash_env = env(objects)
    assert dash_env["CELERIAC_NATS_URL"] == "nats://demo-celeriac-nats.celeriac-system.svc:4222"
    assert "CELERIAC_NATS_AUTH_DIR" not in dash_env
    assert [m["name"] for m in container(objects)["volumeMounts"]] == ["tmp"]


def test_image_is_the_operators_unless_set() -> None:
    default = container(render({**ON, "operator": {"image": {"tag": "9.9.9"}}}))
    assert default["image"] == "ghcr.io/celeriac/celeriac-operator:9.9.9"
    assert container(render(ON))["image"] == (
        f"ghcr.io/celeriac/celeriac-operator:{celeriac.__version__}"
    )
    own = container(render(dashboard_values(image={"repository": "example.com/dash"})))
    assert own["image"] == f"example.com/dash:{celeriac.__version__}"
    pinned = dashboard_values(image={"repository": "example.com/dash", "tag": "2.0",
                                     "pullPolicy": "Always"})  # fmt: skip
    assert (container(render(pinned))["image"], container(render(pinned))["imagePullPolicy"]) == (
        "example.com/dash:2.0", "Always",
    )  # fmt: skip


def test_open_by_default_with_no_auth_variables() -> None:
    dash_env = env(render(ON))
    assert not [name for name in dash_env if name.startswith("CELERIAC_DASHBOARD_")]


def test_token_goes_into_a_secret_and_from_there_into_the_container() -> None:
    objects = render(dashboard_values(auth={"token": "s3cret"}))
    secret = named(objects, "Secret", "demo-celeriac-dashboard")
    assert base64.b64decode(secret["data"]["token"]).decode() == "s3cret"
    dash_env = env(objects)
    assert dash_env["CELERIAC_DASHBOARD_TOKEN"] == {
        "secretKeyRef": {"name": "demo-celeriac-dashboard", "key": "token"}
    }
    assert "CELERIAC_DASHBOARD_USERNAME" not in dash_env
    # The token appears nowhere else in the rendered objects.
    assert "s3cret" not in str([o for o in objects if o["kind"] != "Secret"])
    # A new token rolls the pod (the Deployment itself holds only a reference).
    other = render(dashboard_values(auth={"token": "other"}))
    annotations = pod(objects)["template"]["metadata"]["annotations"]
    assert annotations != pod(other)["template"]["metadata"]["annotations"]


def test_existing_secret_gives_token_or_basic_auth_keys() -> None:
    objects = render(dashboard_values(auth={"existingSecret": "dash-users"}))
    assert "Secret" not in by_kind(objects)
    dash_env = env(objects)
    expected = {"CELERIAC_DASHBOARD_TOKEN": "token", "CELERIAC_DASHBOARD_USERNAME": "username",
                "CELERIAC_DASHBOARD_PASSWORD": "password"}  # fmt: skip
    for name, key in expected.items():
        assert dash_env[name] == {
            "secretKeyRef": {"name": "dash-users", "key": key, "optional": True}
        }


def test_read_only_flag() -> None:
    assert env(render(dashboard_values(readOnly=True)))["CELERIAC_DASHBOARD_READ_ONLY"] == "1"
    assert "CELERIAC_DASHBOARD_READ_ONLY" not in env(render(dashboard_values(readOnly=False)))


def test_rbac_reads_worker_pools_and_nothing_else() -> None:
    for values in CASES.values():
        objects = render(values)
        role = named(objects, "ClusterRole", "demo-celeriac-dashboard")
        assert role["rules"] == [
            {"apiGroups": ["celeriac.io"], "resources": ["workerpools"],
             "verbs": ["get", "list", "watch"]},
        ]  # fmt: skip
        binding = named(objects, "ClusterRoleBinding", "demo-celeriac-dashboard")
        assert binding["roleRef"]["name"] == "demo-celeriac-dashboard"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "demo-celeriac-dashboard",
             "namespace": "celeriac-system"},
        ]  # fmt: skip
    # The operator's own roles are unchanged by the dashboard.
    operator_rules = [
        o["rules"]
        for o in by_kind(render(ON))["ClusterRole"]
        if o["metadata"]["name"] == "demo-celeriac"
    ]
    assert operator_rules == [o["rules"] for o in by_kind(render(NATS))["ClusterRole"]]


def test_without_rbac_the_account_is_still_created() -> None:
    objects = render({**ON, "rbac": {"create": False}})
    assert {o["kind"] for o in dashboard_objects(objects)} == {
        "ServiceAccount", "Service", "Deployment",
    }  # fmt: skip


# values -> a piece of the message the user must see
REJECTED: list[tuple[dict[str, Any], str]] = [
    (dashboard_values(auth={"token": "a", "existingSecret": "b"}), "exclude each other"),
    (dashboard_values(readOnly="yes"), "/dashboard/readOnly"),
    (dashboard_values(service={"port": 0}), "/dashboard/service/port"),
    (dashboard_values(replicas=2), "additional properties 'replicas' not allowed"),
    (dashboard_values(image={"pullPolicy": "Sometimes"}), "pullPolicy"),
    (dashboard_values(resources={"limits": {"memory": "lots"}}), "memory"),
]  # fmt: skip


@pytest.mark.parametrize(("values", "message"), REJECTED, ids=[m for _, m in REJECTED])
def test_wrong_values_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    assert message in render_error(values)
