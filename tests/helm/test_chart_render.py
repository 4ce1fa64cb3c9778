"""The chart without a cluster: lint, a render matrix, rejected values, CRD drift, docs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from celeriac_devenv.chart import CHART_DIR, set_flags

import celeriac
from tests.helm.chart_support import by_kind, helm, operator_deployment, render, render_error

NATS = {"nats": {"url": "nats://nats.nats.svc:4222"}}

RBAC = {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
BUNDLED_NATS = {"ConfigMap", "Service", "StatefulSet"}

# name -> (values, kinds expected besides ServiceAccount and the operator Deployment)
MATRIX: dict[str, tuple[dict[str, Any], set[str]]] = {
    "defaults": (NATS, {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}),
    "bundled-nats": (
        {"natsServer": {"enabled": True}},
        RBAC | BUNDLED_NATS,
    ),
    "bundled-nats-ephemeral": (
        {"natsServer": {"enabled": True, "persistence": {"enabled": False}}},
        RBAC | BUNDLED_NATS,
    ),
    "namespaced": (
        {**NATS, "operator": {"watchNamespaces": ["team-a", "team-b"]}},
        RBAC,
    ),
    "credentials": (
        {"nats": {"url": "tls://nats:4222", "credentials": {"secretName": "nats-creds"}}},
        RBAC,
    ),
    "no-rbac-existing-sa": (
        {**NATS, "rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops"}},
        set(),
    ),
    "single-no-election": (
        {**NATS, "operator": {"leaderElection": {"enabled": False}, "logLevel": "debug"}},
        {"ClusterRole", "ClusterRoleBinding"},
    ),
    "ha": (
        {**NATS, "operator": {"replicas": 3, "image": {"tag": "9.9.9"}}},
        RBAC,
    ),
    "overrides": (
        {
            **NATS,
            "fullnameOverride": "tasks",
            "operator": {
                "nodeSelector": {"pool": "system"},
                "tolerations": [{"key": "system", "operator": "Exists"}],
                "podAnnotations": {"team": "infra"},
                "extraEnv": [{"name": "TZ", "value": "UTC"}],
                "priorityClassName": "system-cluster-critical",
            },
        },
        RBAC,
    ),
}


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return operator_deployment(objects)["spec"]["template"]["spec"]["containers"][0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_lint_strict(case: str) -> None:
    proc = helm("lint", "--strict", str(CHART_DIR), *set_flags(MATRIX[case][0]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_render_matrix(case: str) -> None:
    values, extra = MATRIX[case]
    objects = render(values)
    kinds = set(by_kind(objects))
    expected = {"Deployment"} | extra
    if values.get("serviceAccount", {}).get("create", True):
        expected.add("ServiceAccount")
    assert kinds == expected
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/part-of"] == "celeriac"
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"].get("namespace", "celeriac-system") in (
                "celeriac-system", "team-a", "team-b",
            )  # fmt: skip
    pod = operator_deployment(objects)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["celeriac", "operator"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    assert container["resources"]["requests"]


def test_default_values_point_at_the_given_nats() -> None:
    objects = render(NATS)
    container = _container(objects)
    assert _env(container)["CELERIAC_NATS_URL"] == "nats://nats.nats.svc:4222"
    assert container["image"] == f"ghcr.io/celeriac/celeriac-operator:{celeriac.__version__}"
    assert "--lease-name=demo-celeriac" in container["args"]
    assert "--lease-namespace=celeriac-system" in container["args"]
    assert not [a for a in container["args"] if a.startswith("--namespace")]


def test_bundled_nats_is_single_node_jetstream() -> None:
    objects = render({"natsServer": {"enabled": True}})
    [sts] = by_kind(objects)["StatefulSet"]
    [config] = by_kind(objects)["ConfigMap"]
    assert sts["spec"]["replicas"] == 1
    assert "jetstream" in config["data"]["nats.conf"]
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    url = _env(_container(objects))["CELERIAC_NATS_URL"]
    assert url == "nats://demo-celeriac-nats.celeriac-system.svc:4222"
    ephemeral = render({"natsServer": {"enabled": True, "persistence": {"enabled": False}}})
    [sts] = by_kind(ephemeral)["StatefulSet"]
    assert "volumeClaimTemplates" not in sts["spec"]
    assert {"name": "data", "emptyDir": {}} in sts["spec"]["template"]["spec"]["volumes"]


def _rules(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for o in by_kind(objects).get(kind, []) for r in o["rules"]]


def test_rbac_never_grants_more_than_the_operator_needs() -> None:
    for case, (values, _) in MATRIX.items():
        objects = render(values)
        rules = _rules(objects, "ClusterRole") + _rules(objects, "Role")
        for rule in rules:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], case
            assert "delete" not in rule["verbs"] and "deletecollection" not in rule["verbs"], case
            assert not {"secrets", "pods", "configmaps"} & set(rule["resources"]), case


def test_cluster_wide_rbac_is_one_cluster_role() -> None:
    objects = render(NATS)
    rules = _rules(objects, "ClusterRole")
    resources = {res for r in rules for res in r["resources"]}
    wanted = {"taskqueues", "workerpools", "taskschedules", "deployments", "deployments/scale"}
    assert wanted | {"events"} <= resources
    [lease_role] = by_kind(objects)["Role"]
    assert lease_role["metadata"]["namespace"] == "celeriac-system"
    assert {"leases"} == {res for r in lease_role["rules"] for res in r["resources"]}


def test_namespaced_rbac_is_a_role_per_watched_namespace() -> None:
    objects = render({**NATS, "operator": {"watchNamespaces": ["team-a", "team-b"]}})
    [cluster_role] = by_kind(objects)["ClusterRole"]
    assert cluster_role["rules"] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["list", "watch"],
        },
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    ]
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in by_kind(objects)["Role"]}
    assert roles == {
        ("team-a", "demo-celeriac"),
        ("team-b", "demo-celeriac"),
        ("celeriac-system", "demo-celeriac-leader-election"),
    }
    bindings = by_kind(objects)["RoleBinding"]
    assert all(b["subjects"][0]["namespace"] == "celeriac-system" for b in bindings)
    args = _container(objects)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args


def test_credentials_secret_is_mounted_read_only() -> None:
    values = {"nats": {"url": "tls://nats:4222", "credentials": {"secretName": "nats-creds"}}}
    objects = render(values)
    container = _container(objects)
    assert _env(container)["CELERIAC_NATS_AUTH_DIR"] == "/etc/celeriac/nats"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "nats-credentials")
    assert mount["readOnly"] is True
    volumes = operator_deployment(objects)["spec"]["template"]["spec"]["volumes"]
    assert any(v.get("secret", {}).get("secretName") == "nats-creds" for v in volumes)


def test_changed_settings_change_the_pod_template() -> None:
    def annotations(values: dict[str, Any]) -> dict[str, str]:
        meta = operator_deployment(render(values))["spec"]["template"]["metadata"]
        result: dict[str, str] = meta["annotations"]
        return result

    assert annotations(NATS) != annotations({"nats": {"url": "nats://other:4222"}})


@pytest.mark.parametrize(
    ("events", "age", "size"),
    [({}, 3600.0, 256 * 2**20), ({"maxAge": "6h", "maxBytes": "1GiB"}, 6 * 3600.0, 2**30)],
)
def test_event_stream_limits_reach_the_operator(
    events: dict[str, str], age: float, size: int
) -> None:
    from celeriac.operator.cli import build_parser

    values = {"nats": {**NATS["nats"], "events": events}}
    [container] = operator_deployment(render(values))["spec"]["template"]["spec"]["containers"]
    parsed = build_parser().parse_args(container["args"])
    assert (parsed.events_max_age, parsed.events_max_bytes) == (age, size)


# values -> a piece of the message the user must see
REJECTED: list[tuple[dict[str, Any], str]] = [
    ({**NATS, "operator": {"replicas": "two"}}, "/operator/replicas"),
    ({**NATS, "operator": {"replicas": 2, "leaderElection": {"enabled": False}}},
     "needs operator.leaderElection.enabled=true"),
    ({"nats": {"url": "http://nats:4222"}}, "/nats/url"),
    ({}, "nats.url is required"),
    ({**NATS, "operatr": {}}, "additional properties 'operatr' not allowed"),
    ({**NATS, "operator": {"logLevel": "loud"}}, "/operator/logLevel"),
    ({**NATS, "operator": {"watchNamespaces": ["Team_A"]}}, "/operator/watchNamespaces/0"),
    ({**NATS, "operator": {"image": {"pullPolicy": "Sometimes"}}}, "pullPolicy"),
    ({**NATS, "serviceAccount": {"create": False}}, "serviceAccount.name is required"),
    ({**NATS, "operator": {"resources": {"limits": {"memory": "lots"}}}}, "memory"),
    ({"natsServer": {"enabled": "yes"}}, "/natsServer/enabled"),
    ({"nats": {**NATS["nats"], "events": {"maxAge": "an hour"}}}, "/nats/events/maxAge"),
    ({"nats": {**NATS["nats"], "events": {"maxBytes": "lots"}}}, "/nats/events/maxBytes"),
]  # fmt: skip


@pytest.mark.parametrize(("values", "message"), REJECTED, ids=[m for _, m in REJECTED])
def test_wrong_values_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    assert message in render_error(values)


def test_chart_crds_are_the_generated_crds(repo_root: Path) -> None:
    top = {p.name: p.read_text() for p in sorted((repo_root / "crds").glob("*.yaml"))}
    chart = {p.name: p.read_text() for p in sorted((CHART_DIR / "crds").glob("*.yaml"))}
    assert top, "crds/ is empty"
    assert chart == top, (
        "helm/celeriac/crds/ differs from crds/: run "
        "`python -m celeriac.operator.crdgen && cp crds/*.yaml helm/celeriac/crds/`"
    )


def test_chart_version_follows_the_package() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["appVersion"] == celeriac.__version__


# Values that are whole Kubernetes objects: their inner keys are Kubernetes' own.
OPAQUE = {"resources", "podSecurityContext", "securityContext"}
# Groups explain themselves through their commented children.
GROUPS = {"operator", "image", "leaderElection", "livenessProbe", "readinessProbe",
          "serviceAccount", "rbac", "nats", "credentials", "natsServer", "jetstream",
          "persistence", "dashboard", "service", "auth"}  # fmt: skip


def _uncommented_keys(text: str) -> list[str]:
    """Keys in values.yaml without a comment line right above them."""
    missing = []
    lines = text.splitlines()
    inside_opaque: int | None = None
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        if inside_opaque is not None and indent > inside_opaque:
            continue
        inside_opaque = indent if key in OPAQUE else None
        above = lines[i - 1].strip() if i else ""
        if not above.startswith("#") and key not in GROUPS:
            missing.append(f"line {i + 1}: {key}")
    return missing


def test_values_are_commented_key_by_key() -> None:
    assert _uncommented_keys((CHART_DIR / "values.yaml").read_text()) == []
    assert _uncommented_keys("a:\n  # b\n  b: 1\n  c: 2\n") == ["line 1: a", "line 4: c"]


def test_values_yaml_is_valid_against_its_schema() -> None:
    # Rendering the defaults (plus the one required setting) runs the schema on them.
    assert render(NATS)
