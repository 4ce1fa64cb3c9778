"""Pools and time limits: processes with kill-and-replace, soft limits, orphaned threads."""

from __future__ import annotations

import time

import pytest

from celeriac.app import Celeriac
from celeriac.exceptions import TaskError

pytestmark = pytest.mark.integration


async def test_processes_pool_hard_limit_replaces_child(
    start_worker, client: Celeriac, queue: str
) -> None:
    start_worker(queue, pool="processes", concurrency=1)
    cpu = await client.asend_task("w.cpu", [200_000], queue=queue)
    assert isinstance(await cpu.aget(timeout=30), int)
    first_pid = await (await client.asend_task("w.pid", queue=queue)).aget(timeout=15)
    spin = await client.asend_task("w.spin", queue=queue)
    with pytest.raises(TaskError) as err:
        await spin.aget(timeout=20)
    assert err.value.exc_type == "TimeLimitExceeded"
    # The next task runs, in a new child.
    second_pid = await (await client.asend_task("w.pid", queue=queue)).aget(timeout=30)
    assert second_pid != first_pid


async def test_max_tasks_per_child(start_worker, client: Celeriac, queue: str) -> None:
    start_worker(queue, pool="processes", concurrency=1, extra=("--max-tasks-per-child", "2"))
    pids = []
    for _ in range(3):
        pids.append(await (await client.asend_task("w.pid", queue=queue)).aget(timeout=30))
    assert pids[0] == pids[1] != pids[2]


@pytest.mark.parametrize(("pool", "task"), [
    ("threads", "w.soft"), ("processes", "w.soft"), ("asyncio", "w.asoft"),
])  # fmt: skip
async def test_soft_time_limit_raises_inside_the_task(
    start_worker, client: Celeriac, queue: str, pool: str, task: str
) -> None:
    start_worker(queue, pool=pool, concurrency=1)
    started = time.monotonic()
    result = await client.asend_task(task, [10.0], queue=queue)
    assert await result.aget(timeout=30) == "cleaned up"
    assert time.monotonic() - started < 8


async def test_async_hard_limit_cancels(start_worker, client: Celeriac, queue: str) -> None:
    start_worker(queue)
    result = await client.asend_task("w.ahang", queue=queue)
    with pytest.raises(TaskError) as err:
        await result.aget(timeout=15)
    assert err.value.exc_type == "TimeLimitExceeded"


async def test_orphaned_thread_keeps_its_slot(start_worker, client: Celeriac, queue: str) -> None:
    start_worker(queue, pool="threads", concurrency=1)
    started = time.monotonic()
    hang = await client.asend_task("w.thread_hang", [3.0], queue=queue)
    with pytest.raises(TaskError) as err:
        await hang.aget(timeout=15)
    failed_after = time.monotonic() - started
    assert err.value.exc_type == "TimeLimitExceeded"
    assert failed_after < 2.5
    # The only slot belongs to the sleeping thread until it returns, ~3 s after it began.
    after = await client.asend_task("w.add", [1, 1], queue=queue)
    assert await after.aget(timeout=15) == 2
    assert time.monotonic() - started >= 2.9


async def test_dead_child_fails_the_attempt_and_is_replaced(
    start_worker, client: Celeriac, queue: str
) -> None:
    start_worker(queue, pool="processes", concurrency=1)
    died = await client.asend_task("w.die", queue=queue)
    with pytest.raises(TaskError) as err:
        await died.aget(timeout=20)
    assert err.value.exc_type == "WorkerLostError"
    assert await (await client.asend_task("w.add", [1, 2], queue=queue)).aget(timeout=30) == 3
