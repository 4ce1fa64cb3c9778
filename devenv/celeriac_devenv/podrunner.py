"""Runs Celeriac worker pods on kwok nodes as local processes.

kwok marks pods Running without running anything. For Celeriac's own pods (the
ones carrying the ``celeriac.io/pool`` label) this runner starts the first
container's command with the pod's environment, and stops it with SIGTERM, then
SIGKILL after the pod's grace period, when the pod goes away. So scaling a
Deployment really changes how many workers consume tasks.

Secret and ConfigMap volumes the container mounts are written to a folder of the
pod's own, and environment values under a mount path point into that folder, so
a worker reads its mounted credentials as it would in a real pod.

Run as ``python -m celeriac_devenv.podrunner --kubeconfig FILE --log-dir DIR``.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import posixpath
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
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


def write_volumes(
    pod: Mapping[str, Any], container: Mapping[str, Any], lookup: Lookup, root: Path
) -> dict[str, Path]:
    """Write the Secret and ConfigMap volumes ``container`` mounts into ``root/<volume>/``.

    Every key becomes a file (only the ``items``, at their ``path``, when listed),
    readable by its owner only. Returns each mount path's local folder. Mounts with
    a ``subPath`` and other kinds of volume are skipped. A missing Secret or
    ConfigMap (or listed key) raises, unless the volume is ``optional``.
    """
    volumes = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}
    ns = pod["metadata"]["namespace"]
    written: dict[str, Path] = {}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        name, mount_path = mount["name"], _normal_mount_path(mount["mountPath"])
        if mount.get("subPath") or mount.get("subPathExpr"):
            log.warning("volume %r at %s: subPath is not supported locally", name, mount_path)
            continue
        volume = volumes.get(name)
        if volume is None:
            raise ValueError(f"volume mount {name!r} names no volume of the pod")
        if "secret" in volume:
            kind, source = "secret", volume["secret"]
            source_name = source.get("secretName", "")
        elif "configMap" in volume:
            kind, source = "configmap", volume["configMap"]
            source_name = source.get("name", "")
        else:
            continue  # emptyDir, projected, ...: nothing the runner provides
        if name not in written:
            written[name] = _write_volume(
                root / name, kind=kind, ns=ns, name=source_name, source=source, lookup=lookup
            )
        mounts[mount_path] = written[name]
    return mounts


def _normal_mount_path(path: str) -> str:
    return posixpath.normpath(path) if path else path


def _write_volume(
    target: Path, *, kind: str, ns: str, name: str, source: Mapping[str, Any], lookup: Lookup
) -> Path:
    optional = bool(source.get("optional"))
    try:
        data = dict(lookup(kind, ns, name))
    except Exception as exc:
        if not optional:
            reason = getattr(exc, "reason", None) or exc  # an ApiException's is one line
            raise ValueError(f"{kind} {ns}/{name} cannot be read: {reason}") from exc
        data = {}
    items = source.get("items")
    if items:
        files: dict[str, str] = {}
        for item in items:
            if item["key"] in data:
                files[item["path"]] = data[item["key"]]
            elif not optional:
                raise ValueError(f"{kind} {ns}/{name} has no key {item['key']!r}")
    else:
        files = data
    for relative in files:
        parts = PurePosixPath(relative).parts
        if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
            raise ValueError(f"{kind} {ns}/{name}: item path {relative!r} leaves the volume")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True, mode=0o700)
    for relative, value in files.items():
        path = target.joinpath(*PurePosixPath(relative).parts)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(value)
    return target


def with_local_mounts(env: Mapping[str, str], mounts: Mapping[str, Path]) -> dict[str, str]:
    """``env`` with values at or under a mount path pointing into its local folder
    instead (the longest matching mount path wins)."""
    longest_first = sorted((m for m in mounts if m.strip("/")), key=len, reverse=True)
    out = dict(env)
    for key, value in env.items():
        for mount_path in longest_first:
            if value == mount_path or value.startswith(mount_path + "/"):
                out[key] = str(mounts[mount_path]) + value[len(mount_path) :]
                break
    return out


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
        self.volumes: dict[str, Path] = {}
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
            volumes = self.volume_root(pod)
            try:
                mounts = write_volumes(pod, container, self.lookup, volumes)
                env = dict(os.environ)
                env.update(with_local_mounts(pod_environment(pod, container, self.lookup), mounts))
                argv = with_local_health_port(
                    container_argv(container, self.bin_dir), env, free_port()
                )
            except Exception as exc:
                # A kubelet would keep the pod ContainerCreating; the next sync tries again.
                log.error("cannot run pod %s: %s", key, exc)
                shutil.rmtree(volumes, ignore_errors=True)
                return
            name = key.rsplit("/", 1)[0].replace("/", "_")
            proc = spawn(name, argv, log_dir=self.log_dir, env=env)
            self.running[key] = proc
            self.volumes[key] = volumes
        log.info("started pod %s as pid %d: %s", key, proc.pid, " ".join(argv))

    def volume_root(self, pod: Mapping[str, Any]) -> Path:
        """Where the pod's mounted volumes are written while its process runs."""
        meta = pod["metadata"]
        uid = str(meta.get("uid", ""))[:8]
        return self.log_dir / "volumes" / f"{meta['namespace']}_{meta['name']}_{uid}"

    def _stop(self, key: str, grace: float) -> None:
        with self.lock:
            proc = self.running.pop(key, None)
            volumes = self.volumes.pop(key, None)
        if proc is None:
            return
        log.info("stopping pod %s (pid %d, grace %.0fs)", key, proc.pid, grace)
        threading.Thread(
            target=_stop_and_clean, args=(proc.pid, grace, proc.popen, volumes), daemon=True
        ).start()

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
            procs = [(p, self.volumes.get(k)) for k, p in self.running.items()]
            self.running.clear()
            self.volumes.clear()
        threads = [
            threading.Thread(target=_stop_and_clean, args=(p.pid, grace, p.popen, volumes))
            for p, volumes in procs
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def _stop_and_clean(
    pid: int, grace: float, popen: subprocess.Popen[bytes], volumes: Path | None
) -> None:
    """Stop a pod's process group, then remove its volume folder (best effort)."""
    try:
        stop_group(pid, grace, popen)
    finally:
        if volumes is not None:
            shutil.rmtree(volumes, ignore_errors=True)


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
