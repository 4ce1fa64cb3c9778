"""Worker processes of any contender, started together and always stopped."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from celeriac_devenv.processes import ManagedProcess, spawn

from bench.servers import REPO_ROOT


class WorkerDiedError(RuntimeError):
    """A worker process exited while the benchmark needed it."""


def worker_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a worker: this one, the repository importable, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def python_argv(*args: str) -> list[str]:
    """``python args...`` with the interpreter running the benchmark."""
    return [sys.executable, *args]


@contextmanager
def running_workers(
    commands: Sequence[tuple[str, list[str]]], *, env: Mapping[str, str], log_dir: Path
) -> Iterator[list[ManagedProcess]]:
    """Start every ``(name, argv)`` and stop them all when the block ends."""
    procs: list[ManagedProcess] = []
    try:
        for name, argv in commands:
            procs.append(spawn(name, argv, log_dir=log_dir, env=env, cwd=REPO_ROOT))
        yield procs
    finally:
        stop_all(procs)


def stop_all(procs: Sequence[ManagedProcess], grace: float = 10.0) -> None:
    """Stop every process at once (each drains in parallel), then wait for all."""
    threads = [threading.Thread(target=proc.stop, args=(grace,)) for proc in procs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def check_alive(procs: Sequence[ManagedProcess]) -> None:
    """Raise WorkerDiedError with the log of the first worker that exited."""
    for proc in procs:
        if not proc.alive():
            raise WorkerDiedError(f"{proc.name} exited:\n{proc.log_tail()}")
