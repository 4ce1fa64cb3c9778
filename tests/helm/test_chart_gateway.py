"""The chart's optional HTTP gateway, rendered without a cluster: objects, tokens from
an existing Secret, probes, and a command line ``celeriac gateway`` accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from celeriac_devenv.chart import CHART_DIR, set_flags

import celeriac
from celeriac.gateway.settings import settings_from
from tests.helm.chart_support import by_kind, helm, operator_deployment, render, render_error

NATS = {"nats": {"url": "nats://nats.nats.svc:4222"}}
NAME = "demo-celeriac-gateway"


def gateway_values(**settings: Any) -> dict[str, Any]:
    """The chart's values with the gateway on (tokens in Secret ``gw-tokens``) and
    ``settings`` in its block."""
    auth = {"existingSecret": "gw-tokens", **settings.pop("auth", {})}
    return {**NATS, "gateway": {"enabled": True, "auth": auth, **settings}}


ON = gateway_values()


def gateway_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        o
        for o in objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "gateway"
    ]


def named(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [o for o in by_kind(objects).get(kind, []) if o["metadata"]["name"] == NAME]
    return found


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = named(objects, "Deployment")["spec"]["template"]["spec"]["containers"][
        0
    ]
    return found


def env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects)["env"]}


def test_off_by_default_renders_nothing_of_it() -> None:
    objects = render(NATS)
    assert gateway_objects(objects) == []
    assert not [o for o in objects if "gateway" in o["metadata"]["name"]]


CASES: dict[str, dict[str, Any]] = {
    "on": ON,
    "own-key": gateway_values(auth={"key": "tokens.json"}),
    "one-replica": gateway_values(replicas=1, maxBody="256KiB"),
    "own-image": gateway_values(image={"repository": "example.com/gw", "tag": "1.2"}),
    "bundled-nats-credentials": {
        "natsServer": {"enabled": True},
        "nats": {"credentials": {"secretName": "nats-creds"}},
        "gateway": {"enabled": True, "auth": {"existingSecret": "gw"}, "service": {"port": 80}},
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_lint_strict(case: str) -> None:
    proc = helm("lint", "--strict", str(CHART_DIR), *set_flags(CASES[case]))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_on_renders_a_deployment_and_service(case: str) -> None:
    values = CASES[case]
    objects = render(values)
    assert sorted(o["kind"] for o in gateway_objects(objects)) == ["Deployment", "Service"]
    deployment = named(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == values["gateway"].get("replicas", 2)
    template = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    # It never talks to the Kubernetes API.
    assert template["spec"]["automountServiceAccountToken"] is False
    c = container(objects)
    assert c["ports"] == [{"name": "http", "containerPort": 8788, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    service = named(objects, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    [port] = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    assert port["port"] == values["gateway"].get("service", {}).get("port", 8788)


def test_tokens_come_from_the_existing_secret_as_a_file(tmp_path: Path) -> None:
    objects = render(gateway_values(auth={"key": "tokens.json"}, maxBody="256KiB"))
    assert "Secret" not in by_kind(objects)
    c = container(objects)
    path = env(objects)["CELERIAC_GATEWAY_TOKENS_FILE"]
    assert path == "/etc/celeriac/gateway/tokens.json"
    assert {"name": "tokens", "mountPath": "/etc/celeriac/gateway", "readOnly": True} in (
        c["volumeMounts"]
    )
    volumes = named(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tokens", "secret": {"secretName": "gw-tokens",
            "items": [{"key": "tokens.json", "path": "tokens.json"}]}} in volumes  # fmt: skip
    # The command is one `celeriac gateway` accepts, with the file where the chart puts it.
    assert c["command"][:2] == ["celeriac", "gateway"]
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": {"t" * 32: "*"}}))
    settings = settings_from(c["command"][2:], {"CELERIAC_GATEWAY_TOKENS_FILE": str(tokens)})
    assert (settings.host, settings.port, settings.max_body) == ("0.0.0.0", 8788, 256 * 1024)
    # Another Secret rolls the pods.
    other = render(gateway_values(auth={"existingSecret": "gw-tokens-2"}))
    annotations = named(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations != named(other, "Deployment")["spec"]["template"]["metadata"]["annotations"]


def test_nats_url_and_credentials_come_as_the_operators_do() -> None:
    values = {"nats": {"url": "tls://nats:4222", "credentials": {"secretName": "nats-creds"}},
              "gateway": {"enabled": True, "auth": {"existingSecret": "gw"}}}  # fmt: skip
    objects = render(values)
    op = operator_deployment(objects)["spec"]["template"]["spec"]
    op_env = {e["name"]: e.get("value") for e in op["containers"][0]["env"]}
    gw_env = env(objects)
    for name in ("CELERIAC_NATS_URL", "CELERIAC_NATS_AUTH_DIR"):
        assert gw_env[name] == op_env[name]
    mounts = {m["name"]: m["mountPath"] for m in container(objects)["volumeMounts"]}
    assert mounts["nats-credentials"] == "/etc/celeriac/nats"


def test_image_is_the_operators_unless_set() -> None:
    assert container(render(ON))["image"] == (
        f"ghcr.io/celeriac/celeriac-operator:{celeriac.__version__}"
    )
    own = container(render(gateway_values(image={"repository": "example.com/gw", "tag": "2.0",
                                                 "pullPolicy": "Always"})))  # fmt: skip
    assert (own["image"], own["imagePullPolicy"]) == ("example.com/gw:2.0", "Always")


REJECTED: list[tuple[dict[str, Any], str]] = [
    ({**NATS, "gateway": {"enabled": True}}, "needs gateway.auth.existingSecret"),
    (gateway_values(replicas=0), "/gateway/replicas"),
    (gateway_values(maxBody="lots"), "/gateway/maxBody"),
    (gateway_values(service={"port": 0}), "/gateway/service/port"),
    (gateway_values(auth={"token": "x"}), "additional properties 'token' not allowed"),
    (gateway_values(image={"pullPolicy": "Sometimes"}), "pullPolicy"),
]  # fmt: skip


@pytest.mark.parametrize(("values", "message"), REJECTED, ids=[m for _, m in REJECTED])
def test_wrong_values_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    assert message in render_error(values)
