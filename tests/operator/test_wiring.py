"""Operator wiring without servers: configuration, CLI, login, events, replica counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nats.errors
import pytest

from celeriac.exceptions import NatsRefusedError
from celeriac.operator import cli
from celeriac.operator.config import OperatorConfig
from celeriac.operator.kube import Events
from celeriac.operator.login import connection_info
from celeriac.operator.taskqueues import nats_trouble
from celeriac.operator.workerpools import (
    ReplicaCounts,
    indexed_counts,
    initial_replicas,
    replica_counts,
)
from celeriac.protocol.resources import WorkerPoolSpec

POOL = {"queues": ["q"], "app": "m", "image": "i"}


def test_config_from_env() -> None:
    config = OperatorConfig.from_env(
        {"CELERIAC_NATS_URL": "nats://n:4222", "CELERIAC_NATS_CREDS": "/s/nats.creds"}
    )
    assert config.nats_url == "nats://n:4222"
    assert config.nats_auth.creds_file == "/s/nats.creds"
    assert OperatorConfig.from_env({}).nats_url == "nats://127.0.0.1:4222"


@pytest.mark.parametrize(
    ("pool_url", "worker_url", "expected"),
    [
        (None, None, "nats://op:4222"),
        (None, "nats://workers:4222", "nats://workers:4222"),
        ("nats://pool:4222", "nats://workers:4222", "nats://pool:4222"),
    ],
)
def test_worker_nats_url(pool_url: str | None, worker_url: str | None, expected: str) -> None:
    config = OperatorConfig(nats_url="nats://op:4222", worker_nats_url=worker_url)
    assert config.nats_url_for_workers(pool_url) == expected


def test_cli_flags() -> None:
    args = cli.build_parser().parse_args(
        ["--nats-url", "nats://x:1", "-n", "a", "-n", "b", "--no-leader-election"]
    )
    assert args.nats_url == "nats://x:1"
    assert args.namespaces == ["a", "b"]
    assert args.no_leader_election


def test_cli_rejects_unknown_flags() -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--no-such-flag"])
    assert exc.value.code == 2


def test_login_reads_a_token_kubeconfig(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(
        """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: secret-token}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""
    )
    info = connection_info(str(path))
    assert info.server == "https://127.0.0.1:6443"
    assert info.token == "secret-token"
    assert info.scheme == "Bearer"
    assert info.insecure


def test_event_body_names_the_object() -> None:
    obj = {
        "apiVersion": "celeriac.io/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
    }
    body = Events(api=None).event_body(obj, "Scaled", "x" * 2000, "Normal", 0.0)
    assert body["involvedObject"] == {
        "apiVersion": "celeriac.io/v1alpha1",
        "kind": "WorkerPool",
        "name": "p",
        "namespace": "ns",
        "uid": "u1",
    }
    assert body["metadata"] == {"generateName": "p.", "namespace": "ns"}
    assert len(body["message"]) == 1024
    assert body["firstTimestamp"] == "1970-01-01T00:00:00Z"


AUTO = {**POOL, "autoscaling": {"minReplicas": 2}}


@pytest.mark.parametrize(
    ("spec", "status", "current", "expected"),
    [
        ({**POOL, "replicas": 3}, None, {"spec": {"replicas": 7}}, 3),
        (AUTO, None, None, 2),
        (AUTO, {"desiredReplicas": 5}, None, 5),
        (AUTO, {"desiredReplicas": 5}, {"spec": {"replicas": 4}}, 4),
    ],
)
def test_initial_replicas(
    spec: dict[str, object],
    status: dict[str, object] | None,
    current: dict[str, object] | None,
    expected: int,
) -> None:
    assert initial_replicas(WorkerPoolSpec.model_validate(spec), status, current) == expected


@pytest.mark.parametrize(
    ("spec", "status", "expected"),
    [
        ({"replicas": 3}, {"replicas": 2, "readyReplicas": 1}, ReplicaCounts(3, 2, 1)),
        ({"replicas": 0}, {}, ReplicaCounts(0, 0, 0)),
        ({}, {"replicas": None}, ReplicaCounts(0, 0, 0)),
    ],
)
def test_replica_counts(
    spec: dict[str, Any], status: dict[str, Any], expected: ReplicaCounts
) -> None:
    assert replica_counts(spec, status) == expected


def test_indexed_counts_finds_one_deployment() -> None:
    counts = ReplicaCounts(2, 2, 2)
    index: Any = {("team", "a-workers"): [counts], ("team", "gone-workers"): []}
    assert indexed_counts(index, "team", "a-workers") == counts
    assert indexed_counts(index, "team", "gone-workers") is None
    assert indexed_counts(index, "other", "a-workers") is None


@pytest.mark.parametrize(
    ("exc", "connected", "reason", "delay"),
    [
        (NatsRefusedError("NATS at x refused the operator: bad"), True, "NatsRefused", 30.0),
        (NatsRefusedError("refused"), False, "NatsRefused", 30.0),
        (TimeoutError(), True, "JetStreamNotAnswering", 1.0),
        (nats.errors.TimeoutError(), True, "JetStreamNotAnswering", 1.0),
        (TimeoutError(), False, "NatsUnavailable", 5.0),
        (ConnectionRefusedError(111, "refused"), False, "NatsUnavailable", 5.0),
        (nats.errors.NoServersError(), False, "NatsUnavailable", 5.0),
    ],
)  # fmt: skip
def test_nats_trouble_tells_refusals_elections_and_outages_apart(
    exc: BaseException, connected: bool, reason: str, delay: float
) -> None:
    got_reason, message, got_delay = nats_trouble(exc, connected)
    assert (got_reason, got_delay) == (reason, delay)
    if reason == "NatsRefused":
        assert "--nats-auth-dir" in message
