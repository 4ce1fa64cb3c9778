"""The servers a run needs: a private redis-server (no persistence) and a nats-server.

Both listen on free loopback ports, live in the run's scratch folder and are
stopped when the run ends, whatever happens.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from celeriac_devenv.errors import DevenvError
from celeriac_devenv.nats import NatsServer
from celeriac_devenv.processes import ManagedProcess, free_port, spawn, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


class SetupError(RuntimeError):
    """Something the benchmark needs is missing and could not be installed."""


def missing_prerequisites() -> list[str]:
    """What bench/setup.sh would install that is not there yet."""
    missing = [] if shutil.which("redis-server") else ["redis-server"]
    for module in ("celery", "redis", "matplotlib"):
        if importlib.util.find_spec(module) is None:
            missing.append(module)
    return missing


def run_setup() -> None:
    """Run bench/setup.sh when something is missing; raise SetupError if it fails."""
    missing = missing_prerequisites()
    if not missing:
        return
    print(f"bench: installing {', '.join(missing)} (bench/setup.sh)", file=sys.stderr)
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "bench" / "setup.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SetupError(f"bench/setup.sh failed:\n{proc.stderr.strip()}")
    importlib.invalidate_caches()  # see packages pip just installed
    still = missing_prerequisites()
    if still:
        # A module installed by this process's pip may need a fresh interpreter.
        raise SetupError(f"still missing after bench/setup.sh: {', '.join(still)}; run it again")


@dataclass
class RedisServer:
    """One redis-server without persistence, owned by the run."""

    workdir: Path
    port: int = 0
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """The Redis URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise SetupError("redis-server is not installed; run bench/setup.sh")
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.process = spawn("redis-server", argv, log_dir=self.workdir)
        wait_until(self._ping, timeout=timeout, what="redis-server PING", alive=self.process)
        return self

    def _ping(self) -> bool:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        """Stop the server."""
        if self.process is not None:
            self.process.stop(grace=5)
            self.process = None


# A free port can be taken by another program between picking and binding it.
START_ATTEMPTS = 3


@contextmanager
def running_redis(workdir: Path) -> Iterator[RedisServer]:
    """A redis-server for the duration of the block."""
    server = _start_with_retries(lambda: RedisServer(workdir).start())
    try:
        yield server
    finally:
        server.stop()


def _start_with_retries(start: Callable[[], T]) -> T:
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return start()
        except DevenvError:
            if attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


@contextmanager
def running_nats(workdir: Path) -> Iterator[NatsServer]:
    """A nats-server with JetStream for the duration of the block."""
    server = _start_with_retries(lambda: NatsServer(workdir=workdir).start())
    try:
        yield server
    finally:
        server.stop()
