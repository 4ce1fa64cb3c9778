"""Session fixtures: the real servers every integration and e2e test runs against.

Servers start lazily, once per session, on free loopback ports, and are stopped
at the end; every process they spawn dies with the test run even if it is killed.
``start_worker`` starts worker subprocesses of the app a directory's ``worker_app``
fixture names.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from celeriac_devenv.cluster import KubeEnvironment, start_environment
from celeriac_devenv.nats import (
    NatsCluster,
    NatsServer,
    create_nats_security,
    remove_workdir,
    start_nats,
    start_nats_cluster,
)
from hypothesis import settings as hypothesis_settings

from tests import support
from tests.support import StartWorker, Worker, WorkerApp

REPO_ROOT = Path(__file__).resolve().parent.parent


# Property tests draw the same examples on every run, so a run's verdict does not depend
# on luck; `--hypothesis-profile explore` draws new ones (and replays past failures).
hypothesis_settings.register_profile("deterministic", derandomize=True)
hypothesis_settings.register_profile("explore")
hypothesis_settings.load_profile("deterministic")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run tests marked slow (long fault and scale runs)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``slow`` tests unless ``--run-slow`` is given."""
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: long fault/scale run; give --run-slow to run it")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout the tests run from."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server with JetStream shared by the whole session."""
    server = start_nats(Path(tmp_path_factory.mktemp("nats")))
    yield server
    server.stop()
    remove_workdir(server)


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    """URL of the session's nats-server."""
    return nats_server.url


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test's own, for tests that restart or break it."""
    server = start_nats(tmp_path / "nats")
    yield server
    server.stop()


@pytest.fixture
def secure_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test's own that requires TLS and a user/password; its
    ``security.client_dir`` is laid out as a NATS Secret (``user``, ``password``, ``ca.crt``)."""
    server = start_nats(tmp_path / "nats", security=create_nats_security(tmp_path / "security"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """A 3-node JetStream cluster (``.urls`` is its seed list), for failover tests.

    A test that kills or stops a node starts it again; all nodes stop at the end.
    """
    cluster = start_nats_cluster(Path(tmp_path_factory.mktemp("nats-cluster")), size=3)
    yield cluster
    cluster.stop()
    remove_workdir(cluster)


@pytest.fixture(scope="session")
def kube_env(
    tmp_path_factory: pytest.TempPathFactory, nats_server: NatsServer
) -> Iterator[KubeEnvironment]:
    """The real control plane (etcd, apiserver, controller-manager, scheduler, kwok),
    the pod runner, and the session's NATS; ``kube_env.kubectl(...)`` runs kubectl."""
    env = start_environment(tmp_path_factory.mktemp("kube"), nats=nats_server)
    yield env
    env.stop()


@pytest.fixture(scope="session")
def kubeconfig(kube_env: KubeEnvironment) -> Path:
    """Path of the admin kubeconfig of the session's cluster."""
    return kube_env.kubeconfig


@pytest.fixture(scope="session")
def kube_client(kube_env: KubeEnvironment) -> Any:
    """A ``kubernetes.client.ApiClient`` for the session's cluster (admin)."""
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kube_env.kubeconfig))


@pytest.fixture
def start_worker(tmp_path: Path, nats_url: str, worker_app: WorkerApp) -> Iterator[StartWorker]:
    """Start workers running this directory's ``worker_app``; all are stopped afterwards.

    Called as ``start_worker(queues, url=..., env=..., **options of support.start_worker)``.
    """
    started: list[Worker] = []

    def start(
        queues: str, *, url: str | None = None, env: Mapping[str, str] | None = None, **options: Any
    ) -> Worker:
        worker = support.start_worker(
            queues,
            nats_url=url or nats_url,
            log_dir=tmp_path,
            name=f"worker-{len(started) + 1}",
            app=worker_app.module,
            apps_dir=worker_app.apps_dir,
            env={**worker_app.env, **(env or {})},
            **options,
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.process.stop(grace=5)
