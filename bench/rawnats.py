"""The raw ceiling: plain nats-py publish and fetch on Celeriac's stream settings.

No envelope validation, no results, no retries: how fast JetStream itself moves
tasks through one Python producer and two Python consumers. Messages carry a
``Nats-Msg-Id`` like Celeriac's, so the server does the same deduplication work.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from celeriac_devenv.processes import ManagedProcess

from bench.contending import Backlog, LatencySample, TaskKind, WorkerProfile
from bench.jetstreaming import QueueAdmin
from bench.rawworker import REPLY_HEADER
from bench.workerprocs import python_argv, running_workers, worker_env
from celeriac.protocol import names

RAW_QUEUE = "rawbench"


def payload(kind: str) -> tuple[bytes, dict[str, str]]:
    """A body of the same shape and size class as a task envelope, and its headers."""
    task_id = str(uuid.uuid4())
    body = {"v": 1, "id": task_id, "task": f"bench.{kind}", "args": [], "kwargs": {}}
    return json.dumps(body).encode(), {names.HDR_MSG_ID: task_id}


class RawNats:
    """The raw nats-py contender."""

    name = "raw-nats"

    def __init__(self, url: str, log_dir: Path) -> None:
        self.admin = QueueAdmin(url, RAW_QUEUE)
        self.admin.declare()
        self.log_dir = log_dir
        self._inbox = ""

    def enqueue(self, count: int, *, batch: bool) -> float:
        return self.admin.loop.run(self._enqueue(count, batch))

    async def _enqueue(self, count: int, batch: bool) -> float:
        js, subject = self.admin.js, self.admin.subject
        bodies = [payload("noop") for _ in range(count)]
        started = time.perf_counter()
        if batch:
            futures = [await js.publish_async(subject, b, headers=h) for b, h in bodies]
            await asyncio.gather(*futures)
        else:
            for body, headers in bodies:
                await js.publish(subject, body, headers=headers)
        return time.perf_counter() - started

    def prefill(self, kind: TaskKind, count: int) -> None:
        if kind.name != "noop":
            raise ValueError(f"the raw ceiling only runs no-op messages, not {kind.name}")
        self.enqueue(count, batch=True)

    def backlog(self) -> Backlog:
        return self.admin.backlog()

    def purge(self) -> None:
        self.admin.purge()

    @contextmanager
    def workers(self, profile: WorkerProfile) -> Iterator[list[ManagedProcess]]:
        argv = python_argv("-m", "bench.rawworker", self.admin.url, self.admin.stream)
        commands = [(f"raw-worker-{i}", argv) for i in range(profile.instances)]
        with running_workers(commands, env=worker_env({}), log_dir=self.log_dir) as procs:
            yield procs

    def wait_ready(self, profile: WorkerProfile, timeout: float) -> None:
        self.admin.wait_waiting(profile.instances, timeout)

    def probe(self) -> LatencySample:
        return self.admin.loop.run(self._probe(), timeout=30)

    async def _probe(self) -> LatencySample:
        nc = self.admin.nc
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, max_msgs=1)
        body, headers = payload("stamp")
        headers[REPLY_HEADER] = inbox
        submitted = time.time()
        await self.admin.js.publish(self.admin.subject, body, headers=headers)
        reply = await sub.next_msg(timeout=10)
        done = time.time()
        return LatencySample(to_start=float(reply.data) - submitted, to_result=done - submitted)

    def close(self) -> None:
        self.admin.close()
