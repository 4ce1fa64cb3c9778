"""Running async task functions on the worker's event loop, within their time limits.

A coroutine cannot be interrupted between awaits, so both limits work through
cancellation: at the soft limit the task is cancelled (it sees ``CancelledError``
at its current await and may clean up; if the cancellation escapes, the attempt
fails with ``SoftTimeLimitExceeded``); at the hard limit it is cancelled again and
the worker stops waiting.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from celeriac.worker_runtime.execution import (
    Call,
    Outcome,
    contained,
    error_info,
    invoke,
    soft_limit_error,
    time_limit_error,
)

if TYPE_CHECKING:
    from celeriac.task import Task

# After cancelling at the hard limit, how long to let the coroutine unwind.
_UNWIND = 1.0


async def run_coroutine(task: Task, call: Call) -> Outcome:
    """Await the task's coroutine; cancel it at its limits."""
    started = time.monotonic()
    if call.soft_time_limit is None and call.time_limit is None:
        outcome = await _run_unlimited(task, call)
        outcome.duration = time.monotonic() - started
        return outcome
    inner: asyncio.Task[Any] = asyncio.ensure_future(contained(invoke(task, call)))
    try:
        outcome = await _supervise(inner, call)
    except asyncio.CancelledError:
        inner.cancel()  # the worker itself is being stopped
        raise
    outcome.duration = time.monotonic() - started
    return outcome


async def _run_unlimited(task: Task, call: Call) -> Outcome:
    """Without limits there is nothing to supervise: await the coroutine in place."""
    try:
        return Outcome(value=await invoke(task, call))
    except asyncio.CancelledError as exc:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the worker itself is being stopped
        return Outcome(error=error_info(exc))  # the task's own code was cancelled
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: a task failure
        return Outcome(error=error_info(exc))


async def _supervise(inner: asyncio.Task[Any], call: Call) -> Outcome:
    soft, hard = call.soft_time_limit, call.time_limit
    if soft is not None and (hard is None or soft < hard):
        await asyncio.wait({inner}, timeout=soft)
        if not inner.done():
            inner.cancel("soft time limit")
            remaining = None if hard is None else hard - soft
            await asyncio.wait({inner}, timeout=remaining)
            if inner.done() and inner.cancelled():
                return Outcome(error=soft_limit_error(soft))
    elif hard is not None:
        await asyncio.wait({inner}, timeout=hard)
    else:
        await asyncio.wait({inner})
    if inner.done():
        return _finished(inner)
    assert hard is not None
    inner.cancel("time limit")
    await asyncio.wait({inner}, timeout=_UNWIND)
    outcome = Outcome(error=time_limit_error(hard))
    if not inner.done():
        outcome.still_running = _ended(inner)
    return outcome


def _finished(inner: asyncio.Task[Any]) -> Outcome:
    if inner.cancelled():
        return Outcome(error=error_info(asyncio.CancelledError("task was cancelled")))
    exc = inner.exception()
    if exc is not None:
        return Outcome(error=error_info(exc))
    return Outcome(value=inner.result())


def _ended(inner: asyncio.Task[Any]) -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finish(t: asyncio.Task[Any]) -> None:
        if not t.cancelled():
            t.exception()  # retrieved, so asyncio does not warn about it
        if not done.done():
            done.set_result(None)

    inner.add_done_callback(finish)
    return done
