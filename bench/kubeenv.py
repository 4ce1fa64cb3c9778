"""The Kubernetes side of a run: control plane, CRDs, operator, and resource helpers.

The environment is ``celeriac_devenv``'s (real etcd, kube-apiserver, controllers,
kwok nodes, and a pod runner that runs worker pods as local processes); the
operator runs as ``python -m celeriac.operator`` so its memory can be read.
"""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from celeriac_devenv.cluster import KubeEnvironment, start_environment
from celeriac_devenv.nats import NatsServer
from celeriac_devenv.processes import ManagedProcess, free_port, spawn, wait_until

from bench.servers import REPO_ROOT
from celeriac.protocol import names

GROUP, VERSION = "celeriac.io", "v1alpha1"
PLURALS = {"TaskQueue": "taskqueues", "WorkerPool": "workerpools"}


@contextmanager
def cluster(scratch: Path, nats: NatsServer) -> Iterator[KubeEnvironment]:
    """A running environment with Celeriac's CRDs established."""
    env = start_environment(scratch / "env", nats=nats)
    try:
        env.kubectl("apply", "-f", str(REPO_ROOT / "crds"))
        env.wait_established("taskqueues.celeriac.io", "workerpools.celeriac.io")
        yield env
    finally:
        env.stop()


@contextmanager
def operator(env: KubeEnvironment, log_dir: Path) -> Iterator[ManagedProcess]:
    """One operator process (no leader election: it is the only one)."""
    port = free_port()
    argv = [
        sys.executable, "-m", "celeriac.operator",
        "--kubeconfig", str(env.kubeconfig),
        "--nats-url", str(env.nats_url),
        "--liveness-port", str(port),
        "--no-leader-election",
    ]  # fmt: skip
    proc = spawn("operator", argv, log_dir=log_dir, cwd=REPO_ROOT)
    try:

        def alive() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return b"leader" in r.read()

        wait_until(alive, timeout=60, what="the operator's /healthz", alive=proc)
        yield proc
    finally:
        proc.stop(grace=15)


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def task_queue(name: str, namespace: str) -> dict[str, Any]:
    """A TaskQueue with default settings."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TaskQueue",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {},
    }


def worker_pool(name: str, namespace: str, queue: str, **autoscaling: Any) -> dict[str, Any]:
    """A WorkerPool running the benchmark's Celeriac app on ``queue``."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WorkerPool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "queues": [queue],
            "app": "bench.celeriac_tasks:app",
            "image": "celeriac-bench:local",
            "pool": "asyncio",
            "concurrency": 20,
            "env": [{"name": "PYTHONPATH", "value": str(REPO_ROOT)}],
            "autoscaling": {"minReplicas": 0, "maxReplicas": 4, **autoscaling},
        },
    }


def apply(env: KubeEnvironment, objects: list[dict[str, Any]], timeout: float = 300) -> None:
    """``kubectl apply --server-side`` every object in one call, as a user applying a
    folder would (server-side: one request per object instead of a read and a write)."""
    text = yaml.safe_dump_all(objects)
    env.kubectl("apply", "--server-side", "-f", "-", input=text, timeout=timeout)


def is_ready(obj: dict[str, Any]) -> bool:
    """True when the object's Ready condition is True."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


class Kube:
    """Typed-enough access to the objects the workloads watch."""

    def __init__(self, env: KubeEnvironment) -> None:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(env.kubeconfig))  # type: ignore[no-untyped-call]
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)

    def create_namespace(self, name: str) -> None:
        """Create a namespace."""
        from kubernetes import client

        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    def ready_count(self, namespace: str, kind: str) -> int:
        """How many objects of ``kind`` in ``namespace`` are Ready."""
        listing = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS[kind]
        )
        items: list[dict[str, Any]] = listing.get("items", []) if isinstance(listing, dict) else []
        return sum(1 for item in items if is_ready(item))

    def replicas(self, namespace: str, pool: str) -> int | None:
        """The worker Deployment's desired replicas (None: no Deployment yet)."""
        from kubernetes.client.exceptions import ApiException

        try:
            dep = self.apps.read_namespaced_deployment(f"{pool}-workers", namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return int(dep.spec.replicas or 0)


def stream_of(queue: str) -> str:
    """The work stream the operator made for ``queue``."""
    return names.stream_name(queue)
