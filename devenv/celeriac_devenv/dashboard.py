"""Running ``celeriac dashboard`` as a local process, as the chart's Deployment would.

The demo keeps one up after its journey so the user can look around, and the
dashboard memory benchmark measures one; both wait for ``GET /healthz`` before
handing out its URL.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from celeriac_devenv.processes import ManagedProcess, free_port, spawn, wait_until


@dataclass
class LocalDashboard:
    """A running dashboard and where it listens."""

    process: ManagedProcess
    url: str

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a few seconds."""
        self.process.stop(grace=10)


def healthy(url: str) -> bool:
    """True when ``GET <url>healthz`` answers 200."""
    with urllib.request.urlopen(f"{url}healthz", timeout=2) as response:
        return bool(response.status == 200)


def start_dashboard(
    nats_url: str,
    *,
    log_dir: Path,
    kubeconfig: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    port: int = 0,
    timeout: float = 60.0,
) -> LocalDashboard:
    """Start ``celeriac dashboard`` on 127.0.0.1 and wait until /healthz answers.

    With ``kubeconfig`` it also shows the WorkerPools of that cluster; without, the
    variable is removed so it never reads a cluster by accident.
    """
    port = port or free_port()
    env = {**os.environ, **(extra_env or {})}
    env.pop("KUBECONFIG", None)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    argv = [
        sys.executable, "-m", "celeriac", "dashboard",
        "--nats-url", nats_url, "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    process = spawn("dashboard", argv, log_dir=log_dir, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(
            lambda: healthy(url), timeout=timeout, what="the dashboard's /healthz", alive=process
        )
    except BaseException:
        process.stop(grace=5)
        raise
    return LocalDashboard(process=process, url=url)
