"""The chart's optional webhook dispatcher, rendered without a cluster: a Deployment of
the worker image, secrets from an existing Secret, probes, and a command line
``celeriac webhooks`` accepts."""

from __future__ import annotations

from typing import Any

import pytest
from celeriac_devenv.chart import CHART_DIR, set_flags

import celeriac
from celeriac.worker_runtime.destinations import AddressRules
from celeriac.worker_runtime.webhookcli import parse_options
from celeriac.worker_runtime.webhookretries import RetryPolicy
from tests.helm.chart_support import by_kind, helm, operator_deployment, render, render_error

NATS = {"nats": {"url": "nats://nats.nats.svc:4222"}}
NAME = "demo-celeriac-webhooks"


def webhooks_values(**settings: Any) -> dict[str, Any]:
    """The chart's values with the dispatcher on (secrets in Secret ``wh-secrets``) and
    ``settings`` in its block."""
    secrets = {"existingSecret": "wh-secrets", **settings.pop("secrets", {})}
    return {**NATS, "webhooks": {"enabled": True, "secrets": secrets, **settings}}


ON = webhooks_values()


def webhooks_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        o
        for o in objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "webhooks"
    ]


def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [found] = [o for o in by_kind(objects)["Deployment"] if o["metadata"]["name"] == NAME]
    return found


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = deployment(objects)["spec"]["template"]["spec"]["containers"][0]
    return found


def test_off_by_default_renders_nothing_of_it() -> None:
    objects = render(NATS)
    assert webhooks_objects(objects) == []
    assert not [o for o in objects if "webhooks" in o["metadata"]["name"]]


CASES: dict[str, dict[str, Any]] = {
    "on": ON,
    "own-key": webhooks_values(secrets={"key": "secrets.json"}),
    "one-replica": webhooks_values(replicas=1, concurrency=4, timeout=2.5),
    "private": webhooks_values(allowPrivate=True, allowCidrs=["10.20.0.0/16", "fd00::/8"]),
    "bundled-nats-credentials": {
        "natsServer": {"enabled": True},
        "nats": {"credentials": {"secretName": "nats-creds"}},
        "webhooks": {"enabled": True, "secrets": {"existingSecret": "wh"}},
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_lint_strict(case: str) -> None:
    proc = helm("lint", "--strict", str(CHART_DIR), *set_flags(CASES[case]))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_on_renders_one_deployment_with_probes_and_no_api_access(case: str) -> None:
    values = CASES[case]
    objects = render(values)
    # No Service (nothing calls it) and no RBAC (it never talks to the Kubernetes API).
    assert [o["kind"] for o in webhooks_objects(objects)] == ["Deployment"]
    spec = deployment(objects)["spec"]
    assert spec["replicas"] == values["webhooks"].get("replicas", 2)
    template = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert template["spec"]["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in template["spec"]
    c = container(objects)
    assert c["image"] == f"ghcr.io/celeriac/celeriac-worker:{celeriac.__version__}"
    assert c["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["resources"]["limits"]["memory"] == "256Mi"
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    # Time for the POSTs under way to end after SIGTERM.
    timeout = values["webhooks"].get("timeout", 10)
    assert template["spec"]["terminationGracePeriodSeconds"] > timeout + 1


def test_the_command_is_one_celeriac_webhooks_accepts() -> None:
    objects = render(webhooks_values(
        secrets={"key": "secrets.json"}, allowCidrs=["10.20.0.0/16", "fd00::/8"], maxAttempts=3,
        timeout=2.5, backoff=0.5, backoffMax=30, concurrency=4,
    ))  # fmt: skip
    command = container(objects)["command"]
    assert command[:2] == ["celeriac", "webhooks"]
    options = parse_options(command[2:], {})
    assert options.secrets_file == "/etc/celeriac/webhooks/secrets.json"
    assert options.health_port == 8080
    assert options.policy == RetryPolicy(3, 0.5, 30.0)
    assert (options.timeout, options.concurrency, options.log_format) == (2.5, 4, "text")
    assert options.rules.allow_private is False
    assert [str(n) for n in options.rules.allowed] == ["10.20.0.0/16", "fd00::/8"]
    # The defaults are the command's own.
    defaults = parse_options(container(render(ON))["command"][2:], {})
    assert defaults.policy == RetryPolicy()
    assert defaults.rules == AddressRules()
    assert (defaults.timeout, defaults.concurrency) == (10.0, 16)
    private = parse_options(container(render(webhooks_values(allowPrivate=True)))["command"][2:],
                            {})  # fmt: skip
    assert private.rules.allow_private is True


def test_secrets_come_from_the_existing_secret_as_a_read_only_file() -> None:
    objects = render(webhooks_values(secrets={"key": "secrets.json"}))
    assert "Secret" not in by_kind(objects)
    c = container(objects)
    assert {"name": "secrets", "mountPath": "/etc/celeriac/webhooks", "readOnly": True} in (
        c["volumeMounts"]
    )
    volumes = deployment(objects)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "secrets", "secret": {"secretName": "wh-secrets",
            "items": [{"key": "secrets.json", "path": "secrets.json"}]}} in volumes  # fmt: skip
    # Another Secret rolls the pods.
    other = render(webhooks_values(secrets={"existingSecret": "wh-secrets-2"}))
    annotations = deployment(objects)["spec"]["template"]["metadata"]["annotations"]
    assert annotations != deployment(other)["spec"]["template"]["metadata"]["annotations"]


def test_nats_url_and_credentials_come_as_the_operators_do() -> None:
    values = {"nats": {"url": "tls://nats:4222", "credentials": {"secretName": "nats-creds"}},
              "webhooks": {"enabled": True, "secrets": {"existingSecret": "wh"}}}  # fmt: skip
    objects = render(values)
    op = operator_deployment(objects)["spec"]["template"]["spec"]
    op_env = {e["name"]: e.get("value") for e in op["containers"][0]["env"]}
    wh_env = {e["name"]: e.get("value") for e in container(objects)["env"]}
    for name in ("CELERIAC_NATS_URL", "CELERIAC_NATS_AUTH_DIR"):
        assert wh_env[name] == op_env[name]
    mounts = {m["name"]: m["mountPath"] for m in container(objects)["volumeMounts"]}
    assert mounts["nats-credentials"] == "/etc/celeriac/nats"


def test_an_own_image() -> None:
    own = container(render(webhooks_values(image={"repository": "example.com/wh", "tag": "2.0",
                                                  "pullPolicy": "Always"})))  # fmt: skip
    assert (own["image"], own["imagePullPolicy"]) == ("example.com/wh:2.0", "Always")


REJECTED: list[tuple[dict[str, Any], str]] = [
    ({**NATS, "webhooks": {"enabled": True}}, "needs webhooks.secrets.existingSecret"),
    (webhooks_values(replicas=0), "/webhooks/replicas"),
    (webhooks_values(allowCidrs=["intranet"]), "/webhooks/allowCidrs/0"),
    (webhooks_values(allowPrivate="yes"), "/webhooks/allowPrivate"),
    (webhooks_values(maxAttempts=0), "/webhooks/maxAttempts"),
    (webhooks_values(timeout=0), "/webhooks/timeout"),
    (webhooks_values(concurrency=0), "/webhooks/concurrency"),
    (webhooks_values(backoff=5, backoffMax=2), "backoffMax must not be below webhooks.backoff"),
    (webhooks_values(secrets={"key": "a/b"}), "/webhooks/secrets/key"),
    (webhooks_values(secrets={"secret": "whsec_x"}), "additional properties 'secret' not allowed"),
    (webhooks_values(image={"pullPolicy": "Sometimes"}), "pullPolicy"),
]  # fmt: skip


@pytest.mark.parametrize(("values", "message"), REJECTED, ids=[m for _, m in REJECTED])
def test_wrong_values_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    assert message in render_error(values)
