"""Real nats-servers with JetStream on loopback, for tests, the demo and benchmarks.

``start_nats`` starts one server. ``start_nats_cluster`` starts a JetStream cluster
(three nodes by default) whose nodes find each other through their route ports,
each with its own name and store, and returns once the nodes agree on a meta
leader: the engine a deployment grows into when one server is not enough.

A single server can also be secured like a production one (``security=``, made by
:func:`create_nats_security`): clients must use TLS, trusting a throwaway CA, and
log in with a user and password, laid out as a Celeriac NATS Secret is mounted.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celeriac_devenv import pki
from celeriac_devenv.building import ensure_binaries
from celeriac_devenv.errors import DevenvError
from celeriac_devenv.processes import ManagedProcess, free_port, spawn, wait_until

CLUSTER_NAME = "celeriac"
CONFIG_FILE = "nats-server.conf"

# The files of a Celeriac NATS Secret, as mounted into a pod.
SECRET_USER = "user"
SECRET_PASSWORD = "password"
SECRET_CA = "ca.crt"


@dataclass(frozen=True)
class NatsSecurity:
    """What a server needs to require TLS and a user/password, and what clients get.

    ``directory`` holds the CA certificate, the server's certificate and key, and
    ``client_dir``: the files ``user``, ``password`` and ``ca.crt``, nothing else,
    as a Celeriac NATS Secret is mounted (point ``CELERIAC_NATS_AUTH_DIR`` at it).
    """

    directory: Path
    user: str
    password: str

    @property
    def ca_cert(self) -> Path:
        """The CA certificate clients trust."""
        return self.directory / "ca.crt"

    @property
    def server_cert(self) -> Path:
        """The server's certificate (127.0.0.1 and localhost)."""
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        """The server certificate's private key."""
        return self.directory / "server.key"

    @property
    def client_dir(self) -> Path:
        """The client's credentials, laid out as a mounted Celeriac NATS Secret."""
        return self.directory / "client"


def create_nats_security(directory: Path, user: str = "celeriac") -> NatsSecurity:
    """Write a throwaway CA, a server certificate it signs for 127.0.0.1 and
    localhost, a random password, and the client's credential folder."""
    ca = pki.new_ca("celeriac-devenv-nats-ca")  # names the package when it is missing
    from cryptography.x509.oid import ExtendedKeyUsageOID

    security = NatsSecurity(directory=directory, user=user, password=secrets.token_urlsafe(24))
    directory.mkdir(parents=True, exist_ok=True)
    security.ca_cert.write_bytes(ca.cert_pem)
    pem, key = pki.issue_certificate(
        ca,
        "nats-server",
        ExtendedKeyUsageOID.SERVER_AUTH,
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
    )
    security.server_cert.write_bytes(pem)
    pki.write_private_key(security.server_key, key)
    client = security.client_dir
    client.mkdir(exist_ok=True)
    client.chmod(0o700)
    (client / SECRET_USER).write_text(user)
    password = client / SECRET_PASSWORD
    password.touch(mode=0o600)
    password.chmod(0o600)
    password.write_text(security.password)
    (client / SECRET_CA).write_bytes(ca.cert_pem)
    return security


def config_string(value: str) -> str:
    """``value`` as a double-quoted nats-server configuration string."""
    out = []
    for char in value:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def render_security_config(security: NatsSecurity) -> str:
    """The nats-server configuration that requires TLS and the user/password on the
    client port (the other settings stay on the command line)."""
    return (
        "# Clients must use TLS and log in; written by celeriac-devenv.\n"
        "tls {\n"
        f"  cert_file: {config_string(str(security.server_cert))}\n"
        f"  key_file: {config_string(str(security.server_key))}\n"
        "  timeout: 2\n"
        "}\n"
        "authorization {\n"
        f"  user: {config_string(security.user)}\n"
        f"  password: {config_string(security.password)}\n"
        "}\n"
    )


@dataclass(frozen=True)
class ClusterRoutes:
    """A node's place in a cluster: the cluster's name, its route port, every node's."""

    name: str
    port: int
    peers: tuple[int, ...]

    def argv(self) -> list[str]:
        """nats-server options that join the cluster (a route to itself is ignored)."""
        routes = ",".join(f"nats://127.0.0.1:{port}" for port in self.peers)
        return [
            "--cluster", f"nats://127.0.0.1:{self.port}",
            "--cluster_name", self.name,
            "--routes", routes,
        ]  # fmt: skip


@dataclass
class NatsServer:
    """One nats-server process; ``restart()`` keeps its port and JetStream store.

    A cluster node (``cluster`` set) counts as healthy once it is in contact with
    the meta leader and current with every stream and consumer it holds, so a
    restarted node is back in the cluster, not merely listening, when ``start``
    returns.

    With ``tie_to_parent`` the server dies with the *thread* that started it (Linux
    sends the parent-death signal when that thread ends): start it from a thread that
    outlives it, e.g. ``launch()`` on the event loop's thread and only the wait in
    ``asyncio.to_thread``, not ``start()`` or ``restart()`` in a pool thread.
    """

    workdir: Path
    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    tie_to_parent: bool = True
    process: ManagedProcess | None = None
    cluster: ClusterRoutes | None = None
    security: NatsSecurity | None = None

    @property
    def url(self) -> str:
        """The client URL, ``nats://127.0.0.1:<port>`` (``tls://`` with ``security``)."""
        scheme = "tls" if self.security else "nats"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        """The HTTP monitoring base URL."""
        return f"http://127.0.0.1:{self.monitor_port}"

    @property
    def server_name(self) -> str:
        """The name the server reports (stream and consumer leaders are named by it)."""
        return f"celeriac-{self.port}"

    @property
    def running(self) -> bool:
        """True while the process is up."""
        return self.process is not None and self.process.alive()

    def start(self, timeout: float = 30.0) -> NatsServer:
        """Start the server and wait until it is healthy (see the class docstring)."""
        self.launch()
        self.wait_healthy(timeout)
        return self

    def launch(self) -> None:
        """Start the process without waiting (cluster nodes wait for their peers)."""
        if self.security and self.cluster:
            raise DevenvError("a secured NATS server cannot be a cluster node (routes are plain)")
        binary = ensure_binaries(["nats-server"])["nats-server"]
        store = self.workdir / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        config: list[str] = []
        if self.security:
            path = self.workdir / CONFIG_FILE
            path.write_text(render_security_config(self.security))
            path.chmod(0o600)
            config = ["--config", str(path)]
        argv = [
            str(binary),
            *config,
            "--addr", "127.0.0.1",
            "--port", str(self.port),
            "--http_port", str(self.monitor_port),
            "--jetstream",
            "--store_dir", str(store),
            "--server_name", self.server_name,
            *(self.cluster.argv() if self.cluster else []),
        ]  # fmt: skip
        self.process = spawn(
            "nats-server", argv, log_dir=self.workdir, tie_to_parent=self.tie_to_parent
        )

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait for ``/healthz``; fail at once, with the log, if the process exits."""
        wait_until(
            self.healthy, timeout=timeout, what=f"{self.server_name} health", alive=self.process
        )

    def healthy(self) -> bool:
        """JetStream is up; on a cluster node also in contact and current with the cluster."""
        query = "" if self.cluster else "?js-enabled-only=true"
        try:
            with urllib.request.urlopen(f"{self.monitor_url}/healthz{query}", timeout=2) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError:  # 503 with the reason, while it catches up
            return False

    def jsz(self) -> dict[str, Any]:
        """The server's ``/jsz`` monitoring document (JetStream and its meta group)."""
        with urllib.request.urlopen(f"{self.monitor_url}/jsz", timeout=2) as resp:
            document: dict[str, Any] = json.load(resp)
            return document

    def meta_leader(self) -> str | None:
        """The name of the JetStream meta leader this server knows of, if any."""
        leader = self.jsz().get("meta_cluster", {}).get("leader")
        return str(leader) if leader else None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.process is not None:
            self.process.stop(grace=10)
            self.process = None

    def kill(self) -> None:
        """SIGKILL the server: no shutdown, no flush, as when a machine dies."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.popen.wait()
            self.process = None

    def restart(self, timeout: float = 30.0) -> None:
        """Stop (if running) and start again on the same port with the same store."""
        self.stop()
        self.start(timeout=timeout)


@dataclass
class NatsCluster:
    """A JetStream cluster on loopback: its nodes and the seed list clients connect with."""

    workdir: Path
    nodes: list[NatsServer]

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated: the seed list for ``CELERIAC_NATS_URL``."""
        return ",".join(node.url for node in self.nodes)

    def node(self, server_name: str) -> NatsServer:
        """The node called ``server_name`` (as a stream or consumer leader is named)."""
        for node in self.nodes:
            if node.server_name == server_name:
                return node
        raise KeyError(f"no node called {server_name!r} in {[n.server_name for n in self.nodes]}")

    def meta_leader(self) -> str | None:
        """The meta leader every running node agrees on, else None (also while they
        still name a node that is down: they notice only at the next election)."""
        running = [node for node in self.nodes if node.running]
        leaders = {node.meta_leader() for node in running}
        leader = leaders.pop() if len(leaders) == 1 else None
        return leader if leader in {node.server_name for node in running} else None

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Wait until every running node is healthy and they agree on a meta leader;
        return its name. Fails at once, with its log, if a started node exits."""

        def ready() -> tuple[str, NatsServer | None] | None:
            for node in self.nodes:
                if node.process is not None and not node.process.alive():
                    return "", node
            if not all(node.healthy() for node in self.nodes if node.running):
                return None
            leader = self.meta_leader()
            return (leader, None) if leader else None

        try:
            leader, exited = wait_until(ready, timeout=timeout, what="a JetStream meta leader")
        except DevenvError as exc:
            raise DevenvError(f"{exc}\n{self._log_tails()}") from None
        if exited is not None and exited.process is not None:
            raise DevenvError(f"{exited.server_name} exited:\n{exited.process.log_tail()}")
        return leader

    def _log_tails(self) -> str:
        return "\n".join(
            f"{node.server_name}:\n{node.process.log_tail(15)}"
            for node in self.nodes
            if node.process is not None
        )

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()


def start_nats(
    workdir: Path | None = None,
    *,
    tie_to_parent: bool = True,
    security: NatsSecurity | None = None,
) -> NatsServer:
    """Start a nats-server in ``workdir`` (a new temporary folder by default); with
    ``security`` it requires TLS and the user/password."""
    path = workdir or Path(tempfile.mkdtemp(prefix="celeriac-nats-"))
    return NatsServer(workdir=path, tie_to_parent=tie_to_parent, security=security).start()


def start_nats_cluster(
    workdir: Path | None = None,
    size: int = 3,
    *,
    tie_to_parent: bool = True,
    timeout: float = 60.0,
) -> NatsCluster:
    """Start a ``size``-node JetStream cluster, one folder per node under ``workdir``.

    Every node gets free loopback ports (client, routes, monitoring), its own
    ``server_name`` and store; returns once the cluster has a meta leader.
    """
    if size < 2:
        # A lone clustered node waits for peers forever; three survive losing one.
        raise DevenvError(
            f"a NATS cluster needs at least 2 nodes (3 to survive a loss), not {size}"
        )
    path = workdir or Path(tempfile.mkdtemp(prefix="celeriac-nats-cluster-"))
    route_ports = tuple(free_port() for _ in range(size))
    nodes = [
        NatsServer(
            workdir=path / f"node-{i}",
            tie_to_parent=tie_to_parent,
            cluster=ClusterRoutes(CLUSTER_NAME, route_ports[i], route_ports),
        )
        for i in range(size)
    ]
    cluster = NatsCluster(workdir=path, nodes=nodes)
    try:
        for node in nodes:
            node.launch()
        cluster.wait_ready(timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def remove_workdir(server: NatsServer | NatsCluster) -> None:
    """Delete a stopped server's or cluster's folder."""
    shutil.rmtree(server.workdir, ignore_errors=True)
