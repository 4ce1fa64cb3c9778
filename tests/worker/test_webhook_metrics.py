"""The dispatcher's metrics and probes, as pure policy: status classes, the outcome
counter's exposition, liveness through a NATS outage, readiness, the health port flag."""

from __future__ import annotations

import pytest

from celeriac.worker_runtime import webhookmetrics
from celeriac.worker_runtime.webhookcli import parse_options
from celeriac.worker_runtime.webhookmetrics import (
    DispatcherMetrics,
    DispatcherProbe,
    Outcome,
    status_class,
)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, "2xx"), (204, "2xx"), (302, "3xx"), (410, "4xx"), (429, "4xx"), (503, "5xx"),
     (None, "none"), (99, "none"), (600, "none")],
)  # fmt: skip
def test_status_classes(status: int | None, expected: str) -> None:
    assert status_class(status) == expected


def test_counts_latency_and_in_flight_are_exposed() -> None:
    metrics = DispatcherMetrics()
    metrics.count(Outcome.DELIVERED, 204)
    metrics.count(Outcome.RETRIED, 503)
    metrics.count(Outcome.RETRIED, None)
    metrics.count(Outcome.REFUSED, None)
    metrics.observe_attempt(0.02)
    metrics.count_in_flight(lambda: 3)
    page = metrics.render().decode()
    assert 'celeriac_webhooks_deliveries_total{outcome="delivered",status_class="2xx"} 1.0' in page
    assert 'celeriac_webhooks_deliveries_total{outcome="retried",status_class="5xx"} 1.0' in page
    assert 'celeriac_webhooks_deliveries_total{outcome="retried",status_class="none"} 1.0' in page
    assert 'celeriac_webhooks_deliveries_total{outcome="refused",status_class="none"} 1.0' in page
    # Series not yet counted exist at 0, so rate() works from the first scrape.
    assert 'outcome="dead_lettered",status_class="4xx"} 0.0' in page
    assert 'celeriac_webhooks_attempt_duration_seconds_bucket{le="0.025"} 1.0' in page
    assert "celeriac_webhooks_attempt_duration_seconds_count 1.0" in page
    assert "celeriac_webhooks_in_flight 3.0" in page


@pytest.mark.parametrize(
    ("state", "consuming", "stopping", "alive", "ready", "reason"),
    [
        (None, False, False, True, False, "not consuming webhook jobs yet"),
        ((True, False), False, False, True, False, "not consuming webhook jobs yet"),
        ((True, False), True, False, True, True, "consuming webhook jobs"),
        ((False, True), True, False, True, False, "nats disconnected"),
        ((True, False), True, True, True, False, "stopping"),
    ],
)
def test_probes(
    *,
    state: tuple[bool, bool] | None,
    consuming: bool,
    stopping: bool,
    alive: bool,
    ready: bool,
    reason: str,
) -> None:
    probe = DispatcherProbe(lambda: state, lambda: consuming)
    probe.stopping = stopping
    assert probe.liveness()[0] is alive
    assert probe.readiness() == (ready, reason)


def test_liveness_survives_reconnecting_but_not_a_lasting_loss() -> None:
    now = [1000.0]
    state = [(False, True)]
    probe = DispatcherProbe(lambda: state[0], lambda: True, clock=lambda: now[0])
    assert probe.liveness() == (True, "nats reconnecting")
    now[0] += webhookmetrics.DISCONNECT_GRACE * 5
    assert probe.liveness() == (True, "nats reconnecting")  # still trying: alive
    state[0] = (False, False)  # given up (closed)
    assert probe.liveness() == (False, "nats disconnected for 50s")
    state[0] = (True, False)
    assert probe.liveness() == (True, "nats connected")


@pytest.mark.parametrize(
    ("argv", "env", "port"),
    [
        ([], {}, 8080),
        (["--health-port", "9100"], {"CELERIAC_HEALTH_PORT": "9200"}, 9100),
        ([], {"CELERIAC_HEALTH_PORT": "9200"}, 9200),
        (["--health-port", "0"], {}, 0),
    ],
)
def test_health_port(argv: list[str], env: dict[str, str], port: int) -> None:
    options = parse_options(["--secrets-file", "s.json", *argv], env)
    assert options.health_port == port


def test_a_bad_health_port_is_named() -> None:
    with pytest.raises(
        ValueError,
        match=r"\$CELERIAC_HEALTH_PORT: port must be 0-65535 \(0 turns it off\), got 70000",
    ):
        parse_options(["--secrets-file", "s.json"], {"CELERIAC_HEALTH_PORT": "70000"})
