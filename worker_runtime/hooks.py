"""Calling a task class's hooks: ``before_start``, ``on_success``, ``on_retry``,
``on_failure`` and ``after_return``, with Celery's arguments.

They run in the worker's main process (in the processes pool too, not in the child
that ran the task): a sync hook on a thread of its own, so it never stalls the event
loop, an ``async def`` hook on the loop. ``before_start`` runs just before the task;
the others once the worker has decided the outcome, stored it and settled the
message, so what they see is final; the ``task_failure`` and ``task_postrun``
signals go out among them, in Celery's order. A hook that raises is logged and the
outcome stands. Hooks a class does not override cost nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass
from typing import Any

from celeriac.protocol.envelope import TaskMessage
from celeriac.protocol.states import TaskState
from celeriac.task import Task
from celeriac.worker_runtime import signalling
from celeriac.worker_runtime.execution import ErrorInfo
from celeriac.worker_runtime.raised import einfo_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ending:
    """How an attempt ended once settled: SUCCESS, RETRY or FAILURE, and why."""

    state: TaskState
    value: Any = None
    error: ErrorInfo | None = None


def overrides(task: Task, hook: str) -> bool:
    """Whether the task's class overrides ``hook`` (else calling it would do nothing)."""
    return getattr(type(task), hook, None) is not getattr(Task, hook)


def has_result_hooks(task: Task) -> bool:
    """Whether any hook that follows a run is overridden."""
    return any(
        overrides(task, hook) for hook in ("on_success", "on_retry", "on_failure", "after_return")
    )


async def _call(task: Task, hook: str, *args: Any) -> None:
    method = getattr(task, hook)
    try:
        if inspect.iscoroutinefunction(method):
            await method(*args)
        else:
            await asyncio.to_thread(method, *args)  # copies the context: logs name the task
    except asyncio.CancelledError:
        raise
    except BaseException:  # a hook's failure, sys.exit() included, never ends the worker
        log.exception("the %s hook of %s raised; the task's outcome stands", hook, task.name)


async def before_start(task: Task, message: TaskMessage) -> None:
    """Call ``before_start`` when the task's class has one."""
    if overrides(task, "before_start"):
        await _call(task, "before_start", message.id, tuple(message.args), dict(message.kwargs))


async def after_run(task: Task, message: TaskMessage, ending: Ending) -> None:
    """Tell the task's code how the settled run ended, in Celery's order: ``on_success``,
    ``on_retry`` or ``on_failure``; ``task_failure`` for a failure; ``after_return``;
    ``task_postrun``."""
    hooked = has_result_hooks(task)
    if not hooked and not signalling.listening():
        return
    task_id, args, kwargs = message.id, tuple(message.args), dict(message.kwargs)
    einfo = None
    if ending.error is not None:
        einfo = einfo_of(task_id, ending.error, task.client.exception_modules)
    if einfo is None:
        if overrides(task, "on_success"):
            await _call(task, "on_success", ending.value, task_id, args, kwargs)
    elif ending.state is TaskState.RETRY:
        if overrides(task, "on_retry"):
            await _call(task, "on_retry", einfo.exception, task_id, args, kwargs, einfo)
    else:
        if overrides(task, "on_failure"):
            await _call(task, "on_failure", einfo.exception, task_id, args, kwargs, einfo)
        await signalling.failed(task, task_id, args, kwargs, einfo)
    retval = ending.value if einfo is None else einfo.exception
    if overrides(task, "after_return"):
        await _call(task, "after_return", ending.state.value, retval, task_id, args, kwargs, einfo)
    await signalling.postrun(task, task_id, args, kwargs, retval=retval, state=ending.state)
