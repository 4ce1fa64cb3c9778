"""A real nats-server with JetStream on loopback, for tests, the demo and benchmarks."""

from __future__ import annotations

import shutil
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from celeriac_devenv.building import ensure_binaries
from celeriac_devenv.processes import ManagedProcess, free_port, spawn, wait_until


@dataclass
class NatsServer:
    """One nats-server process; ``restart()`` keeps its port and JetStream store."""

    workdir: Path
    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    tie_to_parent: bool = True
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """The client URL, ``nats://127.0.0.1:<port>``."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        """The HTTP monitoring base URL."""
        return f"http://127.0.0.1:{self.monitor_port}"

    def start(self, timeout: float = 30.0) -> NatsServer:
        """Start the server and wait until JetStream is healthy."""
        binary = ensure_binaries(["nats-server"])["nats-server"]
        store = self.workdir / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        argv = [
            str(binary),
            "--addr", "127.0.0.1",
            "--port", str(self.port),
            "--http_port", str(self.monitor_port),
            "--jetstream",
            "--store_dir", str(store),
            "--server_name", f"celeriac-{self.port}",
        ]  # fmt: skip
        self.process = spawn(
            "nats-server", argv, log_dir=self.workdir, tie_to_parent=self.tie_to_parent
        )
        wait_until(
            self._healthy, timeout=timeout, what="nats-server JetStream health", alive=self.process
        )
        return self

    def _healthy(self) -> bool:
        url = f"{self.monitor_url}/healthz?js-enabled-only=true"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.process is not None:
            self.process.stop(grace=10)
            self.process = None

    def restart(self, timeout: float = 30.0) -> None:
        """Stop and start again on the same port with the same store."""
        self.stop()
        self.start(timeout=timeout)


def start_nats(workdir: Path | None = None, *, tie_to_parent: bool = True) -> NatsServer:
    """Start a nats-server in ``workdir`` (a new temporary folder by default)."""
    path = workdir or Path(tempfile.mkdtemp(prefix="celeriac-nats-"))
    return NatsServer(workdir=path, tie_to_parent=tie_to_parent).start()


def remove_workdir(server: NatsServer) -> None:
    """Delete a stopped server's folder."""
    shutil.rmtree(server.workdir, ignore_errors=True)
