"""Celery 5 with Redis as broker and result backend, driven like an application would.

The module imports Celery only when the contender is built, so the rest of the
suite runs without it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celeriac_devenv.processes import ManagedProcess

from bench.contending import QUEUE, Backlog, LatencySample, TaskKind, WorkerProfile
from bench.workerprocs import python_argv, running_workers, worker_env

# kombu's Redis transport keeps delivered, unacknowledged messages in this hash.
UNACKED_KEY = "unacked"


class CeleryRedis:
    """The Celery + Redis contender; ``pool`` is prefork or threads."""

    def __init__(self, redis_url: str, log_dir: Path) -> None:
        os.environ["BENCH_REDIS_URL"] = redis_url
        import redis

        from bench import celery_tasks

        self.name = "celery-redis"
        self.url = redis_url
        self.tasks = celery_tasks
        self.app: Any = celery_tasks.app
        self.redis = redis.Redis.from_url(redis_url)
        # Celery subscribes the sending app to every task's result channel; after 20,000
        # sends Redis drops that subscriber (pubsub buffer limit). Probes use an app of
        # their own, as a separate web process would.
        self.probe_app: Any = celery_tasks.make_app("bench-probe")
        self.log_dir = log_dir

    def _task(self, name: str) -> Any:
        return getattr(self.tasks, name.removeprefix("a"))

    def enqueue(self, count: int, *, batch: bool) -> float:
        from celery import group  # type: ignore[import-untyped]

        noop = self.tasks.noop
        started = time.perf_counter()
        if batch:
            group(noop.s() for _ in range(count)).apply_async()
        else:
            for _ in range(count):
                noop.delay()
        return time.perf_counter() - started

    def prefill(self, kind: TaskKind, count: int) -> None:
        from celery import group

        task = self._task(kind.name)
        group(task.s(*kind.args) for _ in range(count)).apply_async()

    def backlog(self) -> Backlog:
        with self.redis.pipeline() as pipe:
            pipe.llen(QUEUE)
            pipe.hlen(UNACKED_KEY)
            waiting, unacked = pipe.execute()  # type: ignore[no-untyped-call]
        return Backlog(undelivered=int(waiting), unfinished=int(waiting) + int(unacked))

    def purge(self) -> None:
        self.redis.flushdb()

    @contextmanager
    def workers(self, profile: WorkerProfile) -> Iterator[list[ManagedProcess]]:
        commands = []
        for i in range(profile.instances):
            argv = python_argv(
                "-m", "celery", "-A", "bench.celery_tasks", "worker",
                "-Q", QUEUE, "-P", profile.pool, "-c", str(profile.concurrency),
                "-n", f"bench{i}@%h", "-l", "WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            )  # fmt: skip
            commands.append((f"celery-worker-{i}", argv))
        env = worker_env({"BENCH_REDIS_URL": self.url})
        with running_workers(commands, env=env, log_dir=self.log_dir) as procs:
            yield procs

    def wait_ready(self, profile: WorkerProfile, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.app.control.ping(timeout=0.5) or []) < profile.instances:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {profile.instances} Celery workers answer ping")

    def probe(self) -> LatencySample:
        submitted = time.time()
        result = self.probe_app.send_task("bench.stamp", queue=QUEUE)
        started = float(result.get(timeout=10))
        done = time.time()
        return LatencySample(to_start=started - submitted, to_result=done - submitted)

    def close(self) -> None:
        self.app.close()
        self.probe_app.close()
        self.redis.close()  # type: ignore[no-untyped-call]
