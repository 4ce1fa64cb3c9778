"""Sending ``celeriac.signals`` from the worker: around each attempt, at start and stop.

``task_prerun`` goes out as an attempt starts; ``task_failure`` and ``task_postrun``
once the worker has decided how the attempt ends (retried, failed for good, or
succeeded; ``hooks.after_run`` sends them, between the task class's hooks, in
Celery's order), so their ``state`` is the one stored. Receivers run in the
worker's main process, whatever the pool (a ``--pool processes`` child runs only
the task). They are called with Celery's keyword arguments; a receiver that raises
is logged by the signal and changes nothing. With no receiver connected an attempt
costs three checks more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import ExceptionInfo, TaskRevokedError
from celeriac.protocol.envelope import TaskMessage
from celeriac.protocol.states import TaskState
from celeriac.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    worker_ready,
    worker_shutdown,
)
from celeriac.worker_runtime.execution import Call, Outcome

if TYPE_CHECKING:
    from celeriac.task import Task


def signalled(task: Task, call: Call, attempt: Awaitable[Outcome]) -> Awaitable[Outcome]:
    """``attempt``, sending ``task_prerun`` before it; ``attempt`` itself when nothing
    listens."""
    if task_prerun.has_receivers():
        return _prerun(task, call, attempt)
    return attempt


async def _prerun(task: Task, call: Call, attempt: Awaitable[Outcome]) -> Outcome:
    await task_prerun.asend(sender=task, task_id=call.task_id, task=task, args=call.args,
                            kwargs=call.kwargs)  # fmt: skip
    return await attempt


def listening() -> bool:
    """Whether anything receives the signals that follow a settled attempt."""
    return task_failure.has_receivers() or task_postrun.has_receivers()


async def failed(
    task: Task, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any], einfo: ExceptionInfo
) -> None:
    """``task_failure``: the attempt failed and will not run again."""
    if task_failure.has_receivers():
        await task_failure.asend(sender=task, task_id=task_id, exception=einfo.exception,
                                 args=args, kwargs=kwargs, traceback=einfo.traceback,
                                 einfo=einfo)  # fmt: skip


async def postrun(
    task: Task,
    task_id: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    retval: Any,
    state: TaskState,
) -> None:
    """``task_postrun``: how the attempt ended, as the worker settled it."""
    if task_postrun.has_receivers():
        await task_postrun.asend(sender=task, task_id=task_id, task=task, args=args,
                                 kwargs=kwargs, retval=retval, state=state)  # fmt: skip


async def terminated(task: Task, message: TaskMessage, reason: str) -> None:
    """``task_postrun`` for an attempt stopped by ``revoke(terminate=True)``: REVOKED."""
    if task_postrun.has_receivers():
        error = TaskRevokedError(f"task {message.id} was revoked: {reason}")
        await postrun(task, message.id, tuple(message.args), dict(message.kwargs),
                      retval=error, state=TaskState.REVOKED)  # fmt: skip


async def ready(worker: Any) -> None:
    """``worker_ready``: the worker consumes its queues."""
    await worker_ready.asend(sender=worker)


async def shutdown(worker: Any) -> None:
    """``worker_shutdown``: the worker has stopped taking tasks."""
    await worker_shutdown.asend(sender=worker)
