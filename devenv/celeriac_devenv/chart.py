"""Installing the Helm chart and running its operator locally, as its ServiceAccount.

The chart's operator Deployment sits on a simulated node where nothing runs it,
so the local environment runs the operator as a local process instead, with a
kubeconfig holding a token of the chart's ServiceAccount: it gets exactly the
permissions the chart grants, as it would in a pod.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from celeriac_devenv.cluster import KubeEnvironment
from celeriac_devenv.processes import ManagedProcess, free_port, spawn, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "celeriac"


@dataclass(frozen=True)
class Release:
    """An installed release of the chart, and the names it gave its objects."""

    name: str
    namespace: str

    @property
    def fullname(self) -> str:
        """The chart's object-name prefix (see ``celeriac.fullname`` in _helpers.tpl)."""
        return self.name if "celeriac" in self.name else f"{self.name}-celeriac"

    @property
    def service_account(self) -> str:
        """The operator's ServiceAccount."""
        return self.fullname

    @property
    def lease(self) -> str:
        """The operator's leader-election Lease."""
        return self.fullname

    @property
    def deployment(self) -> str:
        """The operator's Deployment."""
        return f"{self.fullname}-operator"


def set_flags(values: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``--set-json`` flags for a nested mapping of values (one flag per leaf)."""
    flags: list[str] = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flags += set_flags(value, f"{path}.")
        else:
            flags += ["--set-json", f"{path}={json.dumps(value)}"]
    return flags


def install(
    env: KubeEnvironment,
    release: Release,
    values: Mapping[str, Any],
    *,
    upgrade: bool = False,
    chart: Path = CHART_DIR,
) -> str:
    """``helm install`` (or ``upgrade``) the chart and wait for its objects; helm's output."""
    verb = ["upgrade", "--reuse-values"] if upgrade else ["install", "--create-namespace"]
    proc = env.helm(
        *verb, release.name, str(chart), "-n", release.namespace, "--wait", "--timeout", "120s",
        *set_flags(values),
    )  # fmt: skip
    return proc.stdout


def uninstall(env: KubeEnvironment, release: Release) -> str:
    """``helm uninstall`` the release and wait until its objects are gone."""
    return env.helm("uninstall", release.name, "-n", release.namespace, "--wait").stdout


def service_account_kubeconfig(
    env: KubeEnvironment, release: Release, path: Path, account: str | None = None
) -> Path:
    """Write a kubeconfig that authenticates as the release's ServiceAccount (a bound token),
    or as its ServiceAccount ``account`` (e.g. the dashboard's)."""
    account = account or release.service_account
    token = env.kubectl(
        "create", "token", account, "-n", release.namespace, "--duration", "2h"
    ).stdout.strip()
    admin = yaml.safe_load(env.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    user = f"system:serviceaccount:{release.namespace}:{account}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "celeriac-devenv", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "celeriac-devenv", "user": user}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


@dataclass
class LocalOperator:
    """The operator running as a local process, and its liveness port."""

    process: ManagedProcess
    liveness_port: int

    def stop(self) -> None:
        """SIGTERM (the operator releases its Lease), then SIGKILL after a grace period."""
        self.process.stop(grace=15)


def start_operator(
    env: KubeEnvironment,
    release: Release,
    kubeconfig: Path,
    *,
    nats_url: str,
    watch_namespaces: Sequence[str] = (),
    log_dir: Path | None = None,
    name: str = "operator",
) -> LocalOperator:
    """Run ``celeriac operator`` as the chart's Deployment would, with ``kubeconfig``."""
    port = free_port()
    argv = [
        sys.executable, "-m", "celeriac", "operator",
        "--kubeconfig", str(kubeconfig),
        "--nats-url", nats_url,
        "--liveness-port", str(port),
        "--lease-name", release.lease,
        "--lease-namespace", release.namespace,
        *[f"--namespace={ns}" for ns in watch_namespaces],
    ]  # fmt: skip
    child_env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": release.namespace}
    process = spawn(name, argv, log_dir=log_dir or env.workdir / "logs", env=child_env)
    operator = LocalOperator(process=process, liveness_port=port)
    try:
        wait_until(
            lambda: _lease_holder(env, release), timeout=60, what="the operator to take its Lease",
            alive=process,
        )  # fmt: skip
    except BaseException:
        operator.stop()
        raise
    return operator


def _lease_holder(env: KubeEnvironment, release: Release) -> str | None:
    out = env.kubectl(
        "get", "lease", release.lease, "-n", release.namespace, "-o", "json", check=False
    )
    if out.returncode != 0:
        return None
    holder = json.loads(out.stdout).get("spec", {}).get("holderIdentity")
    return str(holder) if holder else None
