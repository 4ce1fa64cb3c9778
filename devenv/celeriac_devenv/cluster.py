"""A real Kubernetes control plane on loopback, with kwok nodes and NATS.

etcd, kube-apiserver (TLS, client certificates, RBAC), kube-controller-manager
and kube-scheduler are the upstream binaries; kwok plays the kubelet of
simulated nodes, and the pod runner turns Celeriac worker pods on those nodes
into local processes. Every wait is on a condition, never a sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celeriac_devenv import kubeconfig, kwokstages, pki
from celeriac_devenv.building import ensure_binaries
from celeriac_devenv.errors import DevenvError
from celeriac_devenv.nats import NatsServer
from celeriac_devenv.processes import ManagedProcess, free_port, spawn, stop_group, wait_until

SERVICE_CIDR = "10.0.0.0/24"
NODE_NAME_PREFIX = "kwok-node-"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
STATE_FILE = "state.json"


@dataclass
class KubeEnvironment:
    """A running environment: where it lives, its ports, and its processes."""

    workdir: Path
    apiserver_port: int
    kubeconfig: Path
    nats: NatsServer | None = None
    processes: list[ManagedProcess] = field(default_factory=list)
    owns_nats: bool = True

    @property
    def server(self) -> str:
        """The API server URL."""
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def nats_url(self) -> str | None:
        """The NATS client URL, when NATS is part of the environment."""
        return self.nats.url if self.nats else None

    def tool_env(self) -> dict[str, str]:
        """Environment for kubectl, helm and Celeriac commands aimed at this cluster."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["HELM_CACHE_HOME"] = str(self.workdir / "helm" / "cache")
        env["HELM_CONFIG_HOME"] = str(self.workdir / "helm" / "config")
        env["HELM_DATA_HOME"] = str(self.workdir / "helm" / "data")
        if self.nats_url:
            env["CELERIAC_NATS_URL"] = self.nats_url
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the environment's kubectl; raise with its stderr when ``check`` fails."""
        return self._tool("kubectl", args, input, check, timeout)

    def wait_established(self, *crds: str, timeout: float = 60) -> None:
        """Wait until each CRD (``name.group``) is Established.

        ``kubectl wait --for=condition=Established`` fails at once, instead of waiting, on
        a CRD just created whose status has no conditions yet; reading the condition does
        not.
        """
        query = '{.status.conditions[?(@.type=="Established")].status}'
        for crd in crds:

            def established(crd: str = crd) -> bool:
                got = self.kubectl("get", f"crd/{crd}", "-o", f"jsonpath={query}", check=False)
                return got.returncode == 0 and got.stdout.strip() == "True"

            wait_until(established, timeout=timeout, interval=0.2, what=f"CRD {crd} Established")

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run the environment's helm against this cluster."""
        return self._tool("helm", args, input, check, timeout)

    def _tool(
        self, name: str, args: tuple[str, ...], input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        binary = ensure_binaries([name], quiet=True)[name]
        proc = subprocess.run(
            [str(binary), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.tool_env(),
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise DevenvError(f"{name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def exports(self) -> dict[str, str]:
        """The variables a person exports to use this environment by hand."""
        bin_dir = self.workdir / "bin"
        out = {"KUBECONFIG": str(self.kubeconfig), "PATH": f"{bin_dir}:$PATH"}
        if self.nats_url:
            out["CELERIAC_NATS_URL"] = self.nats_url
        return out

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Stop the component ``name`` (e.g. ``kube-apiserver``) and start it again as it
        was; for the API server, wait until it is ready (clients must cope meanwhile)."""
        [old] = [p for p in self.processes if p.name == name]
        old.stop(grace=10)
        new = spawn(name, old.argv, log_dir=old.log_path.parent)
        self.processes[self.processes.index(old)] = new
        if name == "kube-apiserver":
            ctx = _admin_tls(pki.Pki(self.workdir / "pki"))
            wait_until(
                lambda: _http_ok(f"{self.server}/readyz", ctx),
                timeout=timeout, what="kube-apiserver /readyz after a restart", alive=new,
            )  # fmt: skip

    def stop(self) -> None:
        """Stop every process, newest first."""
        for proc in reversed(self.processes):
            proc.stop(grace=10)
        self.processes.clear()
        if self.nats is not None and self.owns_nats:
            self.nats.stop()

    def save_state(self) -> None:
        """Record process groups and exports so ``celeriac-devenv down`` can stop them."""
        pids = [p.pid for p in self.processes]
        if self.nats and self.nats.process:
            pids.append(self.nats.process.pid)
        state = {"pids": pids, "exports": self.exports(), "server": self.server}
        (self.workdir / STATE_FILE).write_text(json.dumps(state, indent=2))


def stop_saved(workdir: Path) -> bool:
    """Stop an environment started by ``celeriac-devenv up``; False if none was running."""
    state_path = workdir / STATE_FILE
    if not state_path.exists():
        return False
    state = json.loads(state_path.read_text())
    for pid in reversed(state["pids"]):
        stop_group(int(pid), grace=10)
    state_path.unlink()
    return True


def start_environment(
    workdir: Path,
    *,
    nodes: int = 1,
    nats: NatsServer | None = None,
    with_nats: bool = True,
    with_pod_runner: bool = True,
    tie_to_parent: bool = True,
    timeout: float = 180,
) -> KubeEnvironment:
    """Start etcd, the control plane, kwok nodes, NATS and the pod runner in ``workdir``."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    bins = ensure_binaries()
    _link_tools(workdir / "bin", bins)
    env = KubeEnvironment(
        workdir=workdir,
        apiserver_port=free_port(),
        kubeconfig=workdir / "admin.kubeconfig",
        nats=nats,
        owns_nats=nats is None,
    )
    launch = _Launcher(env, bins, env.workdir / "logs", tie_to_parent, timeout)
    try:
        launch.control_plane(with_nats=with_nats and env.owns_nats)
        launch.nodes(nodes)
        if with_pod_runner:
            launch.pod_runner()
    except BaseException:
        env.stop()
        raise
    return env


@dataclass
class _Launcher:
    """Starts each component in order, waiting for each to be ready."""

    env: KubeEnvironment
    bins: dict[str, Path]
    logs: Path
    tie: bool
    timeout: float
    # The running controller-manager and the certificates to start another.
    cm: tuple[ManagedProcess, pki.Pki] = field(init=False)

    def _spawn(self, name: str, argv: list[str], **kw: Any) -> ManagedProcess:
        proc = spawn(name, argv, log_dir=self.logs, tie_to_parent=self.tie, **kw)
        self.env.processes.append(proc)
        return proc

    def control_plane(self, *, with_nats: bool) -> None:
        env = self.env
        certs = pki.create_pki(env.workdir / "pki")
        kubeconfig.write(env.kubeconfig, env.server, certs, pki.ADMIN)
        if with_nats:
            env.nats = NatsServer(workdir=env.workdir / "nats", tie_to_parent=self.tie).start()
        etcd_url = self.etcd()
        self.apiserver(certs, etcd_url)
        self.controllers(certs)

    def etcd(self) -> str:
        port, peer = free_port(), free_port()
        etcd = self._spawn(
            "etcd",
            [
                str(self.bins["etcd"]),
                "--name", "devenv",
                "--data-dir", str(self.env.workdir / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{port}",
                "--advertise-client-urls", f"http://127.0.0.1:{port}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"devenv=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level", "warn",
            ],
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: _http_ok(f"{url}/health"), timeout=self.timeout, what="etcd /health", alive=etcd
        )
        return url

    def apiserver(self, certs: pki.Pki, etcd_url: str) -> None:
        env = self.env
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self.bins["kube-apiserver"]),
                "--etcd-servers", etcd_url,
                "--bind-address", "127.0.0.1",
                "--advertise-address", "127.0.0.1",
                "--secure-port", str(env.apiserver_port),
                "--tls-cert-file", str(certs.serving_cert),
                "--tls-private-key-file", str(certs.serving_key),
                "--client-ca-file", str(certs.ca_cert),
                "--service-account-key-file", str(certs.sa_public),
                "--service-account-signing-key-file", str(certs.sa_private),
                "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range", SERVICE_CIDR,
                "--authorization-mode", "RBAC",
                "--allow-privileged",
                "--cert-dir", str(env.workdir / "apiserver-certs"),
                "--profiling=false",
                "--enable-priority-and-fairness=false",
            ],
        )  # fmt: skip
        ctx = _admin_tls(certs)
        wait_until(
            lambda: _http_ok(f"{env.server}/readyz", ctx),
            timeout=self.timeout, what="kube-apiserver /readyz", alive=apiserver,
        )  # fmt: skip

    def controllers(self, certs: pki.Pki) -> None:
        env = self.env
        kubeconfig.write(
            env.workdir / "controller-manager.kubeconfig", env.server, certs, pki.CONTROLLER_MANAGER
        )
        sched_config = kubeconfig.write(
            env.workdir / "scheduler.kubeconfig", env.server, certs, pki.SCHEDULER
        )
        self.controller_manager(certs)
        self._spawn(
            "kube-scheduler",
            [
                str(self.bins["kube-scheduler"]),
                "--kubeconfig", str(sched_config),
                "--authentication-kubeconfig", str(sched_config),
                "--authorization-kubeconfig", str(sched_config),
                "--bind-address", "127.0.0.1",
                "--secure-port", str(free_port()),
                "--leader-elect=false",
            ],
        )  # fmt: skip

    def controller_manager(self, certs: pki.Pki) -> ManagedProcess:
        env = self.env
        cm_config = env.workdir / "controller-manager.kubeconfig"
        proc = self._spawn(
            "kube-controller-manager",
            [
                str(self.bins["kube-controller-manager"]),
                "--kubeconfig", str(cm_config),
                "--authentication-kubeconfig", str(cm_config),
                "--authorization-kubeconfig", str(cm_config),
                "--bind-address", "127.0.0.1",
                "--secure-port", str(free_port()),
                "--leader-elect=false",
                "--root-ca-file", str(certs.ca_cert),
                # The bootstrap RBAC roles are per controller: give each its own account.
                "--use-service-account-credentials",
                "--service-account-private-key-file", str(certs.sa_private),
                "--service-cluster-ip-range", SERVICE_CIDR,
                "--controllers", "*,-nodeipam,-cloud-node-lifecycle",
                "--concurrent-deployment-syncs", "10",
                "--concurrent-replicaset-syncs", "10",
            ],
        )  # fmt: skip
        self.cm = (proc, certs)
        return proc

    def nodes(self, count: int) -> None:
        env = self.env
        self._spawn(
            "kwok",
            [
                str(self.bins["kwok"]),
                "--kubeconfig", str(env.kubeconfig),
                "--config", str(kwokstages.write_config(env.workdir / "kwok.yaml")),
                "--manage-nodes-with-annotation-selector", f"{KWOK_ANNOTATION}=fake",
                "--server-address", f"127.0.0.1:{free_port()}",
                "--node-lease-duration-seconds", "40",
                # Addresses only written into node and pod status; no traffic goes there.
                "--node-ip", "10.240.0.10",
                "--cidr", "10.244.0.0/16",
            ],
            # kwok reads ~/.kwok; keep it inside the environment's folder.
            env={**os.environ, "HOME": str(env.workdir)},
        )  # fmt: skip
        for i in range(count):
            manifest = json.dumps(node_manifest(f"{NODE_NAME_PREFIX}{i}"))
            env.kubectl("apply", "-f", "-", input=manifest)
        wait_until(
            lambda: _nodes_ready(env, count),
            timeout=self.timeout,
            what=f"{count} kwok node(s) Ready",
        )
        self.default_service_account()

    def default_service_account(self) -> None:
        """Wait for the controller-manager to create the default ServiceAccount.

        A controller-manager that is up but has not made it within a third of the
        timeout is restarted once (on a loaded machine a start can stall), and one
        that exits is reported with its log.
        """
        env = self.env

        def exists() -> bool:
            return env.kubectl("get", "serviceaccount", "default", check=False).returncode == 0

        proc, certs = self.cm
        try:
            wait_until(
                exists, timeout=self.timeout / 3, what="the default ServiceAccount",
                interval=0.5, alive=proc,
            )  # fmt: skip
            return
        except DevenvError as stalled:
            print(
                f"celeriac-devenv: restarting kube-controller-manager: {stalled}", file=sys.stderr
            )
        proc.stop()
        self.env.processes.remove(proc)
        proc = self.controller_manager(certs)
        wait_until(
            exists,
            timeout=self.timeout,
            what="the default ServiceAccount",
            interval=0.5,
            alive=proc,
        )

    def pod_runner(self) -> None:
        self._spawn(
            "pod-runner",
            [
                sys.executable, "-m", "celeriac_devenv.podrunner",
                "--kubeconfig", str(self.env.kubeconfig),
                "--log-dir", str(self.logs / "pods"),
            ],
        )  # fmt: skip


def node_manifest(name: str) -> dict[str, object]:
    """A Node object that kwok manages: roomy enough for many worker pods."""
    capacity = {"cpu": "64", "memory": "256Gi", "pods": "500"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def _nodes_ready(env: KubeEnvironment, count: int) -> bool:
    out = env.kubectl("get", "nodes", "-o", "json", check=False)
    if out.returncode != 0:
        return False
    ready = 0
    for item in json.loads(out.stdout)["items"]:
        for cond in item.get("status", {}).get("conditions", []):
            if cond["type"] == "Ready" and cond["status"] == "True":
                ready += 1
    return ready >= count


def _admin_tls(certs: pki.Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    ctx.load_cert_chain(str(certs.client_cert(pki.ADMIN)), str(certs.client_key(pki.ADMIN)))
    return ctx


def _http_ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=3, context=ctx) as resp:
        return bool(resp.status == 200)


def _link_tools(bin_dir: Path, bins: dict[str, Path]) -> None:
    """Put kubectl, helm and friends in one folder a person can add to PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, path in bins.items():
        link = bin_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path)
