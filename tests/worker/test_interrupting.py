"""Time limits of async tasks, run in this process (no server): the soft limit raises
``SoftTimeLimitExceeded`` at the task's await, other cancellations stay cancellations,
the errors carry whether ``autoretry_for`` retries them, and code a terminate leaves
running keeps its slot until it ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from celeriac.app import Celeriac
from celeriac.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celeriac.protocol.envelope import TaskMessage
from celeriac.task import Task
from celeriac.worker_runtime import coroutines
from celeriac.worker_runtime.coroutines import Interruptible, run_coroutine
from celeriac.worker_runtime.execution import Call
from celeriac.worker_runtime.starting import start
from celeriac.worker_runtime.terminating import Terminator, terminated_reason
from celeriac.worker_runtime.threads import ThreadPool, run_in_thread
from tests.support import await_until

APP = Celeriac("interrupting", "nats://127.0.0.1:1")


def task(fn: Callable[..., Any], **options: Any) -> Task:
    return Task(APP, fn, name=fn.__name__, client=APP.client, **options)


def call(soft: float | None, hard: float | None, *args: Any) -> Call:
    return Call("t", "t-1", args, {}, soft_time_limit=soft, time_limit=hard)


seen: list[str] = []


async def cleans_up(nested: bool) -> str:
    async def deeper() -> None:
        await asyncio.sleep(30)

    try:
        await (deeper() if nested else asyncio.sleep(30))
    except SoftTimeLimitExceeded as exc:
        seen.append(str(exc))
        await asyncio.sleep(0.01)  # awaiting again after the soft limit works
        return "cleaned up"
    return "finished"


@pytest.mark.parametrize("nested", [False, True])
async def test_soft_limit_raises_at_the_current_await(nested: bool) -> None:
    seen.clear()
    started = time.monotonic()
    outcome = await run_coroutine(task(cleans_up), call(0.05, 5.0, nested))
    assert outcome.error is None and outcome.value == "cleaned up"
    assert seen == ["soft time limit (0.05 s) exceeded"]
    assert time.monotonic() - started < 2


async def ignores_soft() -> None:
    try:
        await asyncio.sleep(30)
    except SoftTimeLimitExceeded:
        seen.append("soft")
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        seen.append("cancelled")
        raise


async def lets_it_escape() -> None:
    await asyncio.sleep(30)


async def test_the_hard_limit_still_ends_a_task_past_its_soft_limit() -> None:
    seen.clear()
    outcome = await run_coroutine(task(ignores_soft), call(0.05, 0.2))
    assert outcome.error is not None and outcome.error.exc_type == "TimeLimitExceeded"
    assert outcome.still_running is None and seen == ["soft", "cancelled"]
    outcome = await run_coroutine(task(lets_it_escape), call(0.05, 5.0))
    assert outcome.error is not None and outcome.error.exc_type == "SoftTimeLimitExceeded"
    assert isinstance(outcome.error.exception, SoftTimeLimitExceeded)


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    seen.clear()
    runner = asyncio.ensure_future(run_coroutine(task(ignores_soft), call(0.05, 5.0)))
    # Past the soft limit, in its second sleep.
    await await_until(lambda: seen == ["soft"], timeout=5, what="the soft limit", interval=0.005)
    runner.cancel()  # the worker stopping
    with pytest.raises(asyncio.CancelledError):
        await runner
    await await_until(lambda: seen == ["soft", "cancelled"], timeout=5, what="the cancellation")


async def test_interrupting_a_finished_or_plain_await() -> None:
    async def value() -> int:
        await asyncio.sleep(0)
        return 7

    body = Interruptible(value())
    runner = asyncio.ensure_future(asyncio.wait_for(_await(body), 5))
    assert await runner == 7
    body.interrupt(runner, SoftTimeLimitExceeded("late"))  # done: nothing happens
    assert runner.result() == 7


async def _await(body: Interruptible) -> Any:
    return await body


async def hangs() -> None:
    await asyncio.sleep(30)


@pytest.mark.parametrize(
    ("autoretry_for", "retried"),
    [((), False), ((Exception,), False), ((TimeLimitExceeded,), True)],
)
async def test_time_limit_errors_know_whether_they_retry(
    autoretry_for: tuple[type[BaseException], ...], retried: bool
) -> None:
    outcome = await run_coroutine(task(hangs, autoretry_for=autoretry_for), call(None, 0.05))
    assert outcome.error is not None and outcome.error.exc_type == "TimeLimitExceeded"
    assert outcome.error.autoretry is retried
    assert isinstance(outcome.error.exception, TimeLimitExceeded)


def sync_fails() -> None:
    raise ConnectionResetError("reset")


@pytest.mark.parametrize(
    ("options", "retried"),
    [
        ({}, False),
        ({"autoretry_for": (ConnectionError,)}, True),
        ({"autoretry_for": (OSError,), "dont_autoretry_for": (ConnectionResetError,)}, False),
    ],
)
async def test_sync_errors_know_whether_they_retry(options: dict[str, Any], retried: bool) -> None:
    outcome = await run_in_thread(task(sync_fails, **options), call(None, 5.0))
    assert outcome.error is not None and outcome.error.exc_type == "ConnectionResetError"
    assert outcome.error.autoretry is retried


unwinding: list[str] = []


async def slow_to_unwind(cleanup: float) -> None:
    unwinding.append("started")
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        await asyncio.sleep(cleanup)  # cleaning up takes a while
        unwinding.append("unwound")
        raise


@pytest.mark.parametrize("cleanup", [0.3, 1.5])
async def test_a_terminated_time_limited_task_keeps_its_slot_until_it_has_unwound(
    monkeypatch: pytest.MonkeyPatch, cleanup: float
) -> None:
    # Within the grace the outcome waits for the coroutine; past it, still_running does.
    monkeypatch.setattr(coroutines, "_UNWIND", 0.6)
    unwinding.clear()
    pool = ThreadPool(1)
    terminator = Terminator(pool)
    the_task, the_call = task(slow_to_unwind), call(None, 60.0, cleanup)
    runner = asyncio.ensure_future(terminator.run(the_task, the_call, pool.run(the_task, the_call)))
    await await_until(lambda: unwinding == ["started"], timeout=5, what="the task to start")
    terminator.terminate(the_call.task_id, "SIGTERM", "not wanted")
    outcome = await asyncio.wait_for(runner, 10)
    assert terminated_reason(outcome) == "terminated (SIGTERM): not wanted"
    if cleanup < 0.6:
        assert unwinding == ["started", "unwound"] and outcome.still_running is None
    else:
        assert unwinding == ["started"] and outcome.still_running is not None
        await asyncio.wait_for(outcome.still_running, 10)
        assert unwinding == ["started", "unwound"]
    await pool.stop()


class SlowStart(Task):
    """A ``before_start`` on a thread that a terminate cannot stop."""

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        unwinding.append("before_start")
        time.sleep(0.5)
        unwinding.append("before_start returned")


async def test_terminating_during_before_start_keeps_the_slot_until_the_hook_returns() -> None:
    unwinding.clear()
    pool = ThreadPool(1)
    terminator = Terminator(pool)
    the_task = SlowStart(APP, slow_to_unwind, name="slow_start", client=APP.client)
    the_call = call(None, 60.0, 0.0)
    message = TaskMessage(id=the_call.task_id, task="slow_start", queue="q")
    attempt = start(the_task, message, the_call, pool.run(the_task, the_call))
    runner = asyncio.ensure_future(terminator.run(the_task, the_call, attempt))
    await await_until(lambda: unwinding == ["before_start"], timeout=5, what="the hook")
    terminator.terminate(the_call.task_id, "SIGTERM", "not wanted")
    outcome = await asyncio.wait_for(runner, 10)
    assert terminated_reason(outcome) == "terminated (SIGTERM): not wanted"
    assert outcome.still_running is not None and unwinding == ["before_start"]
    await asyncio.wait_for(outcome.still_running, 10)
    assert unwinding == ["before_start", "before_start returned"]  # the task never ran
    await pool.stop()
