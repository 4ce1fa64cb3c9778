"""Tasks the worker tests run; the app is deliberately not a global named ``app``."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from celeriac.app import Celeriac
from celeriac.exceptions import SoftTimeLimitExceeded

worker_app = Celeriac("worker-tests")
task = worker_app.task


@task(name="w.add")
def add(a: int, b: int) -> int:
    return a + b


@task(name="w.aadd")
async def aadd(a: int, b: int) -> int:
    await asyncio.sleep(0.01)
    return a + b


@task(name="w.fail", autoretry_for=(ValueError,), max_retries=2, retry_backoff=0.3,
      retry_jitter=False)  # fmt: skip
def fail() -> None:
    raise ValueError("always broken")


@task(name="w.flaky", bind=True, autoretry_for=(RuntimeError,), max_retries=5, retry_backoff=0.1,
      retry_jitter=False)  # fmt: skip
def flaky(self: Any, succeed_on: int) -> int:
    if self.request.retries < succeed_on:
        raise RuntimeError(f"not yet (attempt {self.request.retries + 1})")
    return int(self.request.retries)


@task(name="w.retry_countdown", bind=True, max_retries=1)
def retry_countdown(self: Any, countdown: float) -> str:
    if self.request.retries == 0:
        self.retry(countdown=countdown)
    return "retried"


@task(name="w.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task(name="w.asleep")
async def asleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@task(name="w.pid")
def pid() -> int:
    return os.getpid()


@task(name="w.cpu")
def cpu(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


@task(name="w.spin", time_limit=1.0, max_retries=0)
def spin() -> None:
    while True:  # pure Python: only a kill stops it
        pass


@task(name="w.soft", soft_time_limit=0.5, time_limit=5.0, max_retries=0)
def soft(seconds: float) -> str:
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "finished"


@task(name="w.asoft", soft_time_limit=0.5, time_limit=5.0, max_retries=0)
async def asoft(seconds: float) -> str:
    try:
        await asyncio.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "finished"


@task(name="w.ahang", time_limit=0.5, max_retries=0)
async def ahang() -> None:
    await asyncio.sleep(3600)


@task(name="w.thread_hang", time_limit=0.5, max_retries=0)
def thread_hang(seconds: float) -> None:
    time.sleep(seconds)  # in C: the injected exception lands when the sleep returns


@task(name="w.not_json")
def not_json() -> object:
    return {1, 2}


@task(name="w.submit", bind=True)
def submit(self: Any, x: int) -> str:
    return add.apply_async((x, 1), queue=self.request.queue).id


@task(name="w.asubmit", bind=True)
async def asubmit(self: Any, x: int) -> str:
    return (await aadd.aapply_async((x, 1), queue=self.request.queue)).id


def _lineage(request: Any, child: str | None) -> dict[str, str | None]:
    return {
        "id": request.id,
        "parent": request.parent_id,
        "root": request.root_id,
        "child": child,
    }


@task(name="w.spawn", bind=True)
def spawn(self: Any, levels: int) -> dict[str, str | None]:
    """Submit ``levels`` generations, each from the task code of the one before."""
    child = spawn.apply_async((levels - 1,), queue=self.request.queue).id if levels else None
    return _lineage(self.request, child)


@task(name="w.aspawn", bind=True)
async def aspawn(self: Any, levels: int) -> dict[str, str | None]:
    child = (await aspawn.aapply_async((levels - 1,), queue=self.request.queue)) if levels else None
    return _lineage(self.request, child.id if child else None)


@task(name="w.mark", bind=True, ignore_result=True)
async def mark(self: Any, run: str) -> None:
    """Record one execution of this task id (the 10,000-task test counts them)."""
    broker = await worker_app.broker()
    await broker.js.publish(f"wdone.{run}", self.request.id.encode())


@task(name="w.die", max_retries=0)
def die() -> None:
    os._exit(3)  # a crash the Python code cannot catch
