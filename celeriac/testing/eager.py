"""Eager mode: tasks run in the test's process as they are submitted.

Eager mode is the in-memory NATS with its worker driven by the server: as soon as
a task lands on a queue, the submit call runs the memory worker until nothing is
left, and only then returns. So ``add.delay(2, 3).get()`` has its value at once,
and the run went through everything a worker does with a message: the JSON checks
on arguments and results, retries (``self.retry()``, ``autoretry_for``, the queue's
delivery limit) with their delays skipped, dead letters, revocation, chain steps
receiving the previous result and chord callbacks receiving the list. A result's
``get()`` reads what the worker stored, so a task returning something JSON cannot
carry fails here as it would in production.

``eager(app)`` is the block form; ``app.conf.task_always_eager = True`` turns it on
for good (``always_eager``). With ``task_eager_propagates`` (or ``propagate=True``)
the submit call itself raises the error of a task that failed for good.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from celeriac.async_result import exception_of
from celeriac.protocol.states import TaskState
from celeriac.testing.memory import install, worker_of
from celeriac.testing.worker import MemoryWorker

if TYPE_CHECKING:
    from celeriac.app import Celeriac

# True while eager mode runs tasks: a submit made by a running task (a chain step, a
# task calling delay()) is nested, and its failure is the running task's business.
_RUNNING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "celeriac_testing_eager", default=False
)


def _conf_propagates(app: Celeriac) -> Callable[[], bool]:
    return lambda: bool(app.conf.get("task_eager_propagates", False))


def _runner(
    worker: MemoryWorker, propagate: Callable[[], bool]
) -> Callable[[str | None], Awaitable[None]]:
    """The server's enqueue hook: run everything queued, then raise for a failed task
    submitted from outside a task when ``propagate()`` says so."""

    async def run_now(task_id: str | None) -> None:
        nested = _RUNNING.get()
        token = _RUNNING.set(True)
        try:
            await worker.arun_until_idle()
        finally:
            _RUNNING.reset(token)
        if nested or task_id is None or not propagate():
            return
        record = worker.server.result(task_id)
        if record is not None and record.state is TaskState.FAILURE:
            raise exception_of(task_id, record, worker.app.client.exception_modules)

    return run_now


def _start(app: Celeriac, propagate: bool | None) -> MemoryWorker:
    worker = install(app)
    follow = _conf_propagates(app) if propagate is None else (lambda: propagate)
    worker.server.on_enqueued = _runner(worker, follow)
    return worker


@contextmanager
def eager(app: Celeriac, *, propagate: bool | None = None) -> Iterator[MemoryWorker]:
    """Run ``app``'s tasks as they are submitted, for the block; yields the worker
    (its ``dead_letters()``, ``count()`` and ``tasks()`` show what happened).

    ``propagate``: whether a submit raises the error of a task that failed for good
    (default: ``app.conf.task_eager_propagates``); else ``get()`` raises it.
    """
    previous = app.client.connector
    worker = _start(app, propagate)
    try:
        yield worker
    finally:
        worker.close()
        app.client.use_connector(previous)


def always_eager(app: Celeriac, on: bool) -> None:
    """Turn eager mode on for ``app`` until turned off (``app.conf.task_always_eager``).

    Turning it off puts the app back on NATS, unless it is not in eager mode.
    """
    current = worker_of(app)
    if on:
        if current is None or current.server.on_enqueued is None:
            _start(app, None)
    elif current is not None and current.server.on_enqueued is not None:
        current.close()
        app.client.use_connector(None)
