"""Celeriac: the SDK submits from plain synchronous code, the worker CLI consumes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celeriac_devenv.processes import ManagedProcess

from bench.contending import QUEUE, Backlog, LatencySample, TaskKind, WorkerProfile
from bench.jetstreaming import QueueAdmin
from bench.workerprocs import python_argv, running_workers, worker_env
from celeriac.protocol import names

# How many signatures one send_many call publishes while prefilling.
PREFILL_CHUNK = 5000


class CeleriacNats:
    """The Celeriac contender; the probe task follows the pool (async under asyncio)."""

    name = "celeriac"

    def __init__(self, url: str, log_dir: Path) -> None:
        os.environ["CELERIAC_NATS_URL"] = url
        from bench import celeriac_tasks

        self.url = url
        self.tasks = celeriac_tasks
        self.app = celeriac_tasks.app
        self.app.nats_url = url
        self.log_dir = log_dir
        self.admin = QueueAdmin(url, QUEUE)
        self.admin.declare()
        self.probe_task = "stamp"

    def _task(self, name: str) -> Any:
        return getattr(self.tasks, name)

    def enqueue(self, count: int, *, batch: bool) -> float:
        noop = self.tasks.noop
        self.app.send_many([noop.s()])  # connect outside the measurement
        started = time.perf_counter()
        if batch:
            self.app.send_many([noop.s() for _ in range(count)])
        else:
            for _ in range(count):
                noop.delay()
        return time.perf_counter() - started

    def prefill(self, kind: TaskKind, count: int) -> None:
        task = self._task(kind.name)
        for start in range(0, count, PREFILL_CHUNK):
            size = min(PREFILL_CHUNK, count - start)
            self.app.send_many([task.s(*kind.args) for _ in range(size)])

    def backlog(self) -> Backlog:
        return self.admin.backlog()

    def purge(self) -> None:
        self.admin.purge(f"KV_{names.RESULTS_BUCKET}")

    @contextmanager
    def workers(self, profile: WorkerProfile) -> Iterator[list[ManagedProcess]]:
        argv = python_argv(
            "-m", "celeriac.worker_runtime", "-A", "bench.celeriac_tasks:app",
            "-Q", QUEUE, "--pool", profile.pool, "-c", str(profile.concurrency),
            "--health-port", "0", "-l", "WARNING",
        )  # fmt: skip
        commands = [(f"celeriac-worker-{i}", argv) for i in range(profile.instances)]
        self.probe_task = "astamp" if profile.pool == "asyncio" else "stamp"
        env = worker_env({"CELERIAC_NATS_URL": self.url})
        with running_workers(commands, env=env, log_dir=self.log_dir) as procs:
            yield procs

    def wait_ready(self, profile: WorkerProfile, timeout: float) -> None:
        self.admin.wait_waiting(profile.instances, timeout)

    def probe(self) -> LatencySample:
        task = self._task(self.probe_task)
        submitted = time.time()
        started = float(task.delay().get(timeout=10))
        done = time.time()
        return LatencySample(to_start=started - submitted, to_result=done - submitted)

    def close(self) -> None:
        self.app.close()
        self.admin.close()
