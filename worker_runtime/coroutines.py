"""Running async task functions on the worker's event loop, within their time limits.

A coroutine can only be interrupted at an await. At the soft limit the task sees
``SoftTimeLimitExceeded`` raised at its current await, so ``except
SoftTimeLimitExceeded:`` can clean up (code that never awaits sees it at its next
await); at the hard limit it is cancelled (``CancelledError``) and the worker stops
waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import SoftTimeLimitExceeded
from celeriac.worker_runtime.execution import (
    Abandoned,
    Call,
    Outcome,
    contained,
    error_info,
    invoke,
    soft_limit_error,
    task_error,
    time_limit_error,
)

if TYPE_CHECKING:
    from celeriac.task import Task

# After cancelling it (hard limit, terminate, stop), how long to let the coroutine unwind.
_UNWIND = 1.0


class Interruptible:
    """Awaits a coroutine, and can raise an exception inside it at its current await.

    It steps the coroutine itself (as ``await`` would), so when the asyncio task
    running it is woken by a cancellation it asked for, it throws its own exception
    into the coroutine instead of ``CancelledError``.
    """

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self._pending: BaseException | None = None

    def interrupt(self, runner: asyncio.Task[Any], exc: BaseException) -> None:
        """Raise ``exc`` in the coroutine that ``runner`` (awaiting this) runs."""
        if runner.done():
            return
        self._pending = exc
        runner.cancel()  # wakes it at its await; __await__ swaps the CancelledError

    def _swap(self, cancelled: BaseException) -> BaseException:
        pending, self._pending = self._pending, None
        runner = asyncio.current_task()
        # Only our own cancellation becomes the exception; another one (the worker
        # stopping, the hard limit) stays a cancellation.
        if pending is None or runner is None or runner.cancelling() != 1:
            return cancelled
        runner.uncancel()
        return pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self._coro
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                step = coro.send(sent) if thrown is None else coro.throw(thrown)
            except StopIteration as stop:
                return stop.value
            sent, thrown = None, None
            try:
                sent = yield step
            except GeneratorExit:
                coro.close()
                raise
            except asyncio.CancelledError as exc:
                thrown = self._swap(exc)
            except BaseException as exc:  # whatever asyncio throws in goes on to the task
                thrown = exc


async def run_coroutine(task: Task, call: Call) -> Outcome:
    """Await the task's coroutine within its limits."""
    started = time.monotonic()
    if call.soft_time_limit is None and call.time_limit is None:
        outcome = await _run_unlimited(task, call)
        outcome.duration = time.monotonic() - started
        return outcome
    body = Interruptible(invoke(task, call))
    inner: asyncio.Task[Any] = asyncio.ensure_future(contained(body))
    try:
        outcome = await _supervise(task, inner, body, call)
    except asyncio.CancelledError:
        # Terminated, or the worker is stopping: the slot stays taken until the
        # coroutine has unwound, or, past a grace, until it ends by itself.
        inner.cancel()
        await _unwound(inner)
        if not inner.done():
            raise Abandoned(ended(inner)) from None
        raise
    outcome.duration = time.monotonic() - started
    return outcome


async def _unwound(inner: asyncio.Task[Any]) -> None:
    """Give a cancelled coroutine ``_UNWIND`` seconds to finish unwinding."""
    # Cancelled again while waiting: whoever did is told by the caller's raise.
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait({inner}, timeout=_UNWIND)


async def _run_unlimited(task: Task, call: Call) -> Outcome:
    """Without limits there is nothing to supervise: await the coroutine in place."""
    try:
        return Outcome(value=await invoke(task, call))
    except asyncio.CancelledError as exc:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the worker itself is being stopped
        return Outcome(error=task_error(task, exc))  # the task's own code was cancelled
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: a task failure
        return Outcome(error=task_error(task, exc))


async def _supervise(
    task: Task, inner: asyncio.Task[Any], body: Interruptible, call: Call
) -> Outcome:
    soft, hard = call.soft_time_limit, call.time_limit
    if soft is not None and (hard is None or soft < hard):
        await asyncio.wait({inner}, timeout=soft)
        if not inner.done():
            body.interrupt(inner, SoftTimeLimitExceeded(f"soft time limit ({soft:g} s) exceeded"))
            remaining = None if hard is None else hard - soft
            await asyncio.wait({inner}, timeout=remaining)
            if inner.done() and inner.cancelled():  # cancelled before it ever ran
                return Outcome(error=soft_limit_error(task, soft))
    elif hard is not None:
        await asyncio.wait({inner}, timeout=hard)
    else:
        await asyncio.wait({inner})
    if inner.done():
        return _finished(task, inner)
    assert hard is not None
    inner.cancel("time limit")
    await asyncio.wait({inner}, timeout=_UNWIND)
    outcome = Outcome(error=time_limit_error(task, hard))
    if not inner.done():
        outcome.still_running = ended(inner)
    return outcome


def _finished(task: Task, inner: asyncio.Task[Any]) -> Outcome:
    if inner.cancelled():
        return Outcome(error=error_info(asyncio.CancelledError("task was cancelled")))
    exc = inner.exception()
    if exc is not None:
        return Outcome(error=task_error(task, exc))
    return Outcome(value=inner.result())


def ended(inner: asyncio.Future[Any]) -> asyncio.Future[None]:
    """A future that is done once ``inner`` is, whichever way it ends (its error is
    retrieved, so asyncio does not warn about it)."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finish(t: asyncio.Future[Any]) -> None:
        if not t.cancelled():
            t.exception()
        if not done.done():
            done.set_result(None)

    inner.add_done_callback(finish)
    return done
