"""Fixtures of the operator's end-to-end tests: CRDs installed, the operator running."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from celeriac_devenv.cluster import KubeEnvironment, start_environment
from celeriac_devenv.processes import ManagedProcess, free_port, spawn

from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class OperatorProcess:
    """``python -m celeriac.operator`` against the test cluster, restartable."""

    kube: KubeEnvironment
    log_dir: Path
    port: int = 0
    process: ManagedProcess | None = None
    nats_url: str | None = None  # default: the environment's NATS
    args: tuple[str, ...] = ()  # more options, e.g. ("-n", NS, "--lease-name", NAME)

    def start(self, role: str = "leader") -> None:
        self.port = free_port()
        argv = [
            sys.executable, "-m", "celeriac.operator",
            "--kubeconfig", str(self.kube.kubeconfig),
            "--nats-url", self.nats_url or str(self.kube.nats_url),
            "--liveness-port", str(self.port),
            "--lease-namespace", "default",
            "--verbose",
            *self.args,
        ]  # fmt: skip
        self.process = spawn("operator", argv, log_dir=self.log_dir, cwd=ROOT)
        wait_until(
            lambda: self.role() == role,
            timeout=60,
            what=f"the operator to be {role}",
            alive=self.process,
        )

    def role(self) -> str:
        """``leader`` or ``standby``, from the liveness endpoint."""
        url = f"http://127.0.0.1:{self.port}/healthz"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read().decode().split()[-1]

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=15)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the operator, as an out-of-memory kill or a node loss would."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.popen.wait(timeout=30)
            self.process = None

    def log(self) -> str:
        return self.process.log_tail(80) if self.process else ""


def install_crds(kube: KubeEnvironment) -> KubeEnvironment:
    """Apply Celeriac's CRDs and wait until they are established."""
    kube.kubectl("apply", "-f", str(ROOT / "crds"))
    kube.wait_established(
        "taskqueues.celeriac.io", "workerpools.celeriac.io", "taskschedules.celeriac.io"
    )
    return kube


@contextlib.contextmanager
def own_control_plane(workdir: Path) -> Iterator[KubeEnvironment]:
    """A control plane of a test module's own, without a NATS, CRDs installed: for an
    operator with NATS settings of its own (the session's operator watches everything)."""
    env = start_environment(workdir, with_nats=False)
    try:
        yield install_crds(env)
    finally:
        env.stop()


@pytest.fixture(scope="session")
def crds(kube_env: KubeEnvironment) -> KubeEnvironment:
    """The cluster with Celeriac's CRDs installed and established."""
    return install_crds(kube_env)


@pytest.fixture(scope="session")
def operator(
    crds: KubeEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator for the session (tests that restart it leave it running)."""
    proc = OperatorProcess(crds, tmp_path_factory.mktemp("operator"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def namespace(crds: KubeEnvironment) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    crds.kubectl("create", "namespace", name)
    yield name
    crds.kubectl("delete", "namespace", name, "--wait=false", check=False)
