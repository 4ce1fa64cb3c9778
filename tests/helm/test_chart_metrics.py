"""The operator's metrics in the chart: its port, the metrics Service, the optional
ServiceMonitor, and the log format given to the operator."""

from __future__ import annotations

from typing import Any

import pytest
from celeriac_devenv.chart import CHART_DIR

from tests.helm.chart_support import by_kind, helm, operator_deployment, render, render_error

NATS = {"nats": {"url": "nats://nats.nats.svc:4222"}}


def metrics_objects(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return by_kind(
        [
            o
            for o in objects
            if o["metadata"].get("labels", {}).get("app.kubernetes.io/component")
            == "operator-metrics"
        ]
    )


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = operator_deployment(objects)["spec"]["template"]["spec"]["containers"][
        0
    ]
    return found


def test_defaults_serve_metrics_on_the_health_port_without_extra_objects() -> None:
    objects = render(NATS)
    assert metrics_objects(objects) == {}
    container = operator_container(objects)
    assert container["ports"] == [{"name": "health", "containerPort": 8081, "protocol": "TCP"}]
    assert "--log-format=text" in container["args"]


def test_the_service_selects_the_operator_pods_by_their_port() -> None:
    values = {
        **NATS,
        "operator": {"healthPort": 9100},
        "metrics": {"service": {"enabled": True, "annotations": {"team": "infra"}}},
    }
    objects = render(values)
    found = metrics_objects(objects)
    assert set(found) == {"Service"}
    [service] = found["Service"]
    assert service["metadata"]["name"] == "demo-celeriac-operator-metrics"
    assert service["metadata"]["namespace"] == "celeriac-system"
    assert service["metadata"]["annotations"] == {"team": "infra"}
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9100, "targetPort": "health", "protocol": "TCP"}
    ]
    pod_labels = operator_deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert operator_container(objects)["ports"][0]["containerPort"] == 9100


def test_a_service_monitor_scrapes_the_metrics_service() -> None:
    monitor = {"enabled": True, "interval": "15s", "labels": {"release": "kube-prometheus"}}
    objects = render({**NATS, "metrics": {"serviceMonitor": monitor}})
    found = metrics_objects(objects)
    assert set(found) == {"Service", "ServiceMonitor"}  # the monitor brings the Service
    [service], [sm] = found["Service"], found["ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["namespace"] == "celeriac-system"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus"
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["celeriac-system"]}
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    [port] = service["spec"]["ports"]
    assert port["name"] == "metrics"


def test_scrape_timeout_is_set_only_when_given() -> None:
    monitor = {"enabled": True, "scrapeTimeout": "10s"}
    objects = render({**NATS, "metrics": {"serviceMonitor": monitor}})
    [sm] = metrics_objects(objects)["ServiceMonitor"]
    assert sm["spec"]["endpoints"][0]["scrapeTimeout"] == "10s"


def test_lint_with_the_service_monitor() -> None:
    flags = ["--set", "nats.url=nats://n:4222", "--set", "metrics.serviceMonitor.enabled=true"]
    proc = helm("lint", "--strict", str(CHART_DIR), *flags)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_json_log_format_reaches_the_operator() -> None:
    objects = render({**NATS, "operator": {"logFormat": "json"}})
    assert "--log-format=json" in operator_container(objects)["args"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"operator": {"logFormat": "yaml"}}, "logFormat"),
        ({"metrics": {"serviceMonitor": {"interval": "soon"}}}, "interval"),
        ({"metrics": {"service": {"port": 9}}}, "port"),
    ],
)
def test_wrong_metrics_values_are_refused(values: dict[str, Any], message: str) -> None:
    assert message in render_error({**NATS, **values})
