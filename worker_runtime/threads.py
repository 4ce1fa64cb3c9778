"""Running sync task functions on threads, within their time limits (best effort).

Python cannot kill a thread. At the soft limit the worker raises
``SoftTimeLimitExceeded`` inside the thread with ``PyThreadState_SetAsyncExc``; the
interpreter delivers it at the next bytecode the thread executes, so code blocked
in C (a socket read, ``time.sleep``, a long numpy call) sees it only when that
call returns. At the hard limit the worker raises ``TimeLimitExceeded`` the same
way, marks the attempt failed and stops waiting; the orphaned thread keeps its
slot until it really ends, so the worker never runs more threads than ``-c``.
An attempt with a time limit gets a fresh daemon thread, so an exception raised
late can never land in another task. Attempts without limits (the default) are
never interrupted, so they share reused threads: starting a thread per task
would cost more than a short task itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import ctypes
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celeriac.worker_runtime.coroutines import run_coroutine
from celeriac.worker_runtime.execution import (
    Call,
    ErrorInfo,
    Outcome,
    invoke,
    task_error,
    time_limit_error,
)

if TYPE_CHECKING:
    from celeriac.task import Task

log = logging.getLogger(__name__)


@dataclass
class _Attempt:
    """Shared between the loop and one task thread; ``guard`` orders injection and exit."""

    guard: threading.Lock = field(default_factory=threading.Lock)
    running: bool = True
    value: Any = None
    error: ErrorInfo | None = None


# The attempt's error until the task returns or raises (a limit hit before it began).
_INTERRUPTED_EARLY = ErrorInfo(TimeLimitExceeded.__name__, "interrupted before the task ran")


def raise_in_thread(thread: threading.Thread, exc_type: type[BaseException]) -> bool:
    """Schedule ``exc_type`` to be raised in ``thread``; True when the thread was found."""
    if thread.ident is None:
        return False
    found = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type)
    )
    return bool(found == 1)


class ThreadPool:
    """``--pool threads`` (and sync tasks under ``--pool asyncio``).

    Async tasks run on the event loop. Concurrency is bounded by the worker's slots,
    so ``concurrency`` reused threads are always enough.
    """

    def __init__(self, concurrency: int) -> None:
        self._reused = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="celeriac-task"
        )

    async def start(self) -> None:
        """Nothing to prepare: threads start on first use."""

    async def stop(self) -> None:
        """Let the reused threads end once idle; threads still running are not waited for."""
        self._reused.shutdown(wait=False, cancel_futures=True)

    async def run(self, task: Task, call: Call) -> Outcome:
        """Run the task: on the loop when async, on a reused thread without time
        limits, else on a thread of its own."""
        if task.is_async:
            return await run_coroutine(task, call)
        if call.soft_time_limit is None and call.time_limit is None:
            loop = asyncio.get_running_loop()
            started = time.monotonic()
            context = contextvars.copy_context()
            outcome = await loop.run_in_executor(self._reused, context.run, _unlimited, task, call)
            outcome.duration = time.monotonic() - started
            return outcome
        return await run_in_thread(task, call)


def _unlimited(task: Task, call: Call) -> Outcome:
    """One attempt on a reused thread: nothing can interrupt it, so nothing can leak."""
    try:
        return Outcome(value=invoke(task, call))
    except BaseException as exc:
        return Outcome(error=task_error(task, exc))


async def run_in_thread(task: Task, call: Call) -> Outcome:
    """Run a sync task on a fresh daemon thread, enforcing its limits as far as possible."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    attempt = _Attempt()
    thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(_body, task, call, attempt, loop, finished),
        name=f"celeriac-task-{call.task}",
        daemon=True,
    )
    started = time.monotonic()
    thread.start()
    timed_out = await _wait_with_limits(thread, attempt, finished, call)
    if timed_out:
        assert call.time_limit is not None
        log.warning(
            "task passed its hard time limit (%g s); its thread cannot be killed and keeps "
            "its slot until it returns",
            call.time_limit,
        )
        return Outcome(
            error=time_limit_error(task, call.time_limit),
            duration=time.monotonic() - started,
            still_running=finished,
        )
    return Outcome(value=attempt.value, error=attempt.error, duration=time.monotonic() - started)


async def _wait_with_limits(
    thread: threading.Thread, attempt: _Attempt, finished: asyncio.Future[None], call: Call
) -> bool:
    """Wait for the thread; True when it outlived the hard limit."""
    soft, hard = call.soft_time_limit, call.time_limit
    waited = 0.0
    if soft is not None and (hard is None or soft < hard):
        if await _wait(finished, soft):
            return False
        _inject(thread, attempt, SoftTimeLimitExceeded)
        waited = soft
    if hard is None:
        await asyncio.wait({finished})
        return False
    if await _wait(finished, hard - waited):
        return False
    _inject(thread, attempt, TimeLimitExceeded)
    return True


async def _wait(finished: asyncio.Future[None], seconds: float) -> bool:
    done, _ = await asyncio.wait({finished}, timeout=seconds)
    return bool(done)


def _inject(thread: threading.Thread, attempt: _Attempt, exc_type: type[BaseException]) -> None:
    with attempt.guard:
        if attempt.running:
            raise_in_thread(thread, exc_type)


def _body(
    task: Task,
    call: Call,
    attempt: _Attempt,
    loop: asyncio.AbstractEventLoop,
    finished: asyncio.Future[None],
) -> None:
    attempt.error = _INTERRUPTED_EARLY
    try:
        try:
            attempt.value = invoke(task, call)
            attempt.error = None
        except BaseException as exc:
            attempt.error = task_error(task, exc)
        with attempt.guard:
            attempt.running = False
    except BaseException:
        # An exception injected just as the task returned: the attempt is already recorded.
        attempt.running = False
    finally:
        # A closed loop means the worker has exited: nobody waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_set_done, finished)


def _set_done(finished: asyncio.Future[None]) -> None:
    if not finished.done():
        finished.set_result(None)
