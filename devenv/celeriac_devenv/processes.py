"""Child processes that never outlive their owner, and condition waits.

Every server the environment starts goes through :func:`spawn`: it gets its own
process group and, when tied to its parent, a parent-death signal, so even a
test run killed with SIGKILL leaves no process behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from celeriac_devenv.errors import DevenvError

_PR_SET_PDEATHSIG = 1
T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class ManagedProcess:
    """A started server: its process, the log it writes, and how to stop it."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        return self.popen.pid

    def alive(self) -> bool:
        """True while the process has not exited."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the process log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL after ``grace`` seconds."""
        stop_group(self.popen.pid, grace, self.popen)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    tie_to_parent: bool = True,
) -> ManagedProcess:
    """Start ``argv`` in its own process group, logging to ``log_dir/<name>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if tie_to_parent else None,  # noqa: PLW1509
        )
    return ManagedProcess(name=name, popen=popen, log_path=log_path, argv=list(argv))


def stop_group(pid: int, grace: float, popen: subprocess.Popen[bytes] | None = None) -> None:
    """Stop the process group led by ``pid``: SIGTERM, wait, then SIGKILL."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if popen is not None:
            if popen.poll() is not None:
                break
        elif not _pid_alive(pid):
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if popen is not None:
        popen.wait()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    alive: ManagedProcess | Sequence[ManagedProcess] | None = None,
) -> T:
    """Poll ``check`` until it returns something truthy; raise naming ``what`` on timeout.

    When ``alive`` is given and one of those processes exits, fail at once with its log;
    on timeout the message carries their logs too.
    """
    watched = [alive] if isinstance(alive, ManagedProcess) else list(alive or [])
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the condition may fail until the server is up
            last_error = exc
        for proc in watched:
            if not proc.alive():
                raise DevenvError(
                    f"{proc.name} exited while waiting for {what}:\n{proc.log_tail()}"
                )
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            logs = "".join(f"\n{proc.name} log:\n{proc.log_tail()}" for proc in watched)
            raise DevenvError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{logs}")
        time.sleep(interval)
