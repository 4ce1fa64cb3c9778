"""Runs Celeriac worker pods on kwok nodes as local processes.

kwok marks pods Running without running anything. For Celeriac's own pods (the
ones carrying the ``celeriac.io/pool`` label) this runner starts the first
container's command with the pod's environment, and stops it with SIGTERM, then
SIGKILL after the pod's grace period, when the pod goes away. So scaling a
Deployment really changes how many workers consume tasks.

Run as ``python -m celeriac_devenv.podrunner --kubeconfig FILE --log-dir DIR``.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from celeriac_devenv.processes import ManagedProcess, free_port, spawn, stop_group

POOL_LABEL = "celeriac.io/pool"
HEALTH_PORT_ENV = "CELERIAC_HEALTH_PORT"
log = logging.getLogger("celeriac_devenv.podrunner")

# (kind, namespace, name) -> data; kind is "secret" or "configmap".
Lookup = Callable[[str, str, str], Mapping[str, str]]


def container_argv(container: Mapping[str, Any], bin_dir: Path) -> list[str]:
    """The local command for a pod's container: ``celeriac``/``python`` map to this venv."""
    argv = [*(container.get("command") or []), *(container.get("args") or [])]
    if not argv:
        raise ValueError(f"container {container.get('name')!r} has no command to run locally")
    head = argv[0]
    if head in ("celeriac", "python", "python3"):
        local = bin_dir / ("celeriac" if head == "celeriac" else Path(sys.executable).name)
        argv[0] = str(local)
    return argv


def pod_environment(
    pod: Mapping[str, Any], container: Mapping[str, Any], lookup: Lookup
) -> dict[str, str]:
    """The variables a kubelet would give the container (value, fieldRef, refs, envFrom)."""
    meta = pod["metadata"]
    fields = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod.get("spec", {}).get("nodeName", ""),
        "status.podIP": pod.get("status", {}).get("podIP", ""),
    }
    ns = meta["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("configmap", "configMapRef"), ("secret", "secretRef")):
            if key in source:
                for k, v in lookup(kind, ns, source[key]["name"]).items():
                    env[prefix + k] = v
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        ref = var.get("valueFrom") or {}
        if "fieldRef" in ref:
            env[var["name"]] = fields.get(ref["fieldRef"]["fieldPath"], "")
        elif "secretKeyRef" in ref or "configMapKeyRef" in ref:
            kind = "secret" if "secretKeyRef" in ref else "configmap"
            sel = ref.get("secretKeyRef") or ref["configMapKeyRef"]
            env[var["name"]] = lookup(kind, ns, sel["name"]).get(sel["key"], "")
    return env


def with_local_health_port(argv: list[str], env: dict[str, str], port: int) -> list[str]:
    """Give each local worker its own health port (pods share one host here)."""
    env[HEALTH_PORT_ENV] = str(port)
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--health-port" and i + 1 < len(out):
            out[i + 1] = str(port)
        elif arg.startswith("--health-port="):
            out[i] = f"--health-port={port}"
    return out


class PodRunner:
    """Keeps one local process per Running Celeriac pod."""

    def __init__(self, kubeconfig: Path, log_dir: Path) -> None:
        from kubernetes import client, config

        config.load_kube_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        self.core = client.CoreV1Api()
        self.log_dir = log_dir
        self.bin_dir = Path(sys.executable).parent
        self.running: dict[str, ManagedProcess] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def lookup(self, kind: str, namespace: str, name: str) -> Mapping[str, str]:
        """Read a Secret's or ConfigMap's data (decoded)."""
        if kind == "secret":
            data = self.core.read_namespaced_secret(name, namespace).data or {}
            return {k: base64.b64decode(v).decode() for k, v in data.items()}
        return dict(self.core.read_namespaced_config_map(name, namespace).data or {})

    def observe(self, pod: dict[str, Any], deleted: bool = False) -> None:
        """React to one pod's latest state."""
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}/{meta.get('uid', '')}"
        gone = deleted or meta.get("deletionTimestamp") is not None
        phase = pod.get("status", {}).get("phase")
        if gone or phase in ("Succeeded", "Failed"):
            grace = pod.get("spec", {}).get("terminationGracePeriodSeconds") or 30
            self._stop(key, float(grace))
        elif phase == "Running":
            self._start(key, pod)

    def _start(self, key: str, pod: dict[str, Any]) -> None:
        with self.lock:
            if key in self.running or self.stopping.is_set():
                return
            container = pod["spec"]["containers"][0]
            try:
                env = dict(os.environ)
                env.update(pod_environment(pod, container, self.lookup))
                argv = with_local_health_port(
                    container_argv(container, self.bin_dir), env, free_port()
                )
            except Exception as exc:
                log.error("cannot run pod %s: %s", key, exc)
                return
            name = key.rsplit("/", 1)[0].replace("/", "_")
            proc = spawn(name, argv, log_dir=self.log_dir, env=env)
            self.running[key] = proc
        log.info("started pod %s as pid %d: %s", key, proc.pid, " ".join(argv))

    def _stop(self, key: str, grace: float) -> None:
        with self.lock:
            proc = self.running.pop(key, None)
        if proc is None:
            return
        log.info("stopping pod %s (pid %d, grace %.0fs)", key, proc.pid, grace)
        threading.Thread(target=proc.stop, args=(grace,), daemon=True).start()

    def sync(self) -> str:
        """List pods, start and stop processes to match; return the resourceVersion."""
        pods = self.core.list_pod_for_all_namespaces(label_selector=POOL_LABEL)
        seen = set()
        for item in pods.items:
            pod = self.core.api_client.sanitize_for_serialization(item)
            meta = pod["metadata"]
            seen.add(f"{meta['namespace']}/{meta['name']}/{meta.get('uid', '')}")
            self.observe(pod)
        with self.lock:
            stale = [k for k in self.running if k not in seen]
        for key in stale:
            self._stop(key, 30)
        return str(pods.metadata.resource_version if pods.metadata else "")

    def run(self) -> None:
        """List, then watch, until asked to stop; re-list whenever a watch ends."""
        from kubernetes import watch

        while not self.stopping.is_set():
            try:
                version = self.sync()
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self.core.list_pod_for_all_namespaces,
                    label_selector=POOL_LABEL,
                    resource_version=version,
                    timeout_seconds=60,
                )
                for event in stream:
                    if self.stopping.is_set():
                        break
                    pod = self.core.api_client.sanitize_for_serialization(event["object"])
                    self.observe(pod, deleted=event["type"] == "DELETED")
            except Exception as exc:
                if not self.stopping.is_set():
                    log.warning("pod watch interrupted (%s); listing again", exc)
                    self.stopping.wait(1)

    def shutdown(self, grace: float = 10) -> None:
        """Stop every local pod process."""
        self.stopping.set()
        with self.lock:
            procs = list(self.running.values())
            self.running.clear()
        threads = [threading.Thread(target=stop_group, args=(p.pid, grace, p.popen)) for p in procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m celeriac_devenv.podrunner")
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--log-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    runner = PodRunner(args.kubeconfig, args.log_dir)
    worker = threading.Thread(target=runner.run, daemon=True)

    def on_signal(signum: int, _frame: object) -> None:
        runner.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.start()
    runner.stopping.wait()
    runner.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
