"""What running one task function produces, independent of where it ran.

Every pool turns a call into an :class:`Outcome`: a value or an :class:`ErrorInfo`
(plain data, so an error can cross a process boundary), plus, for a thread that
outlived its hard time limit, a future that ends with the thread.
"""

from __future__ import annotations

import asyncio
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from celeriac.exceptions import Retry, SoftTimeLimitExceeded, TimeLimitExceeded

if TYPE_CHECKING:
    from celeriac.task import Task


@dataclass(frozen=True)
class ErrorInfo:
    """An exception as data: what the result record and the dead letter show."""

    exc_type: str
    message: str
    traceback: str | None = None
    # Set when the task asked for a retry (self.retry / raise Retry).
    retry_requested: bool = False
    countdown: float | None = None
    max_retries: int | None = None

    @property
    def error(self) -> str:
        """``"Type: message"``, as stored in ``ResultRecord.error``."""
        return f"{self.exc_type}: {self.message}" if self.message else self.exc_type


@dataclass
class Outcome:
    """The result of one attempt."""

    value: Any = None
    error: ErrorInfo | None = None
    duration: float = 0.0
    # Not None when the code is still running after the worker stopped waiting for it.
    still_running: asyncio.Future[None] | None = None


@dataclass(frozen=True)
class Call:
    """One attempt: the task name and what to call it with (picklable)."""

    task: str
    task_id: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    soft_time_limit: float | None
    time_limit: float | None
    # The task's Request, built for bound tasks only: they receive
    # Task.bound_context(request) as their first argument.
    request: Any = None


class Pool(Protocol):
    """Where attempts run; the worker picks one with ``--pool``."""

    async def start(self) -> None:
        """Prepare (start child processes, ...)."""
        ...

    async def run(self, task: Task, call: Call) -> Outcome:
        """Run ``task`` for ``call`` within its time limits."""
        ...

    async def stop(self) -> None:
        """Release resources; running attempts are abandoned."""
        ...


def error_info(exc: BaseException) -> ErrorInfo:
    """Describe ``exc`` (a :class:`Retry` describes the error it wraps)."""
    if isinstance(exc, Retry):
        cause = exc.exc
        base = (
            error_info(cause)
            if cause is not None
            else ErrorInfo("Retry", str(exc) or "retry requested", _format(exc))
        )
        return ErrorInfo(
            exc_type=base.exc_type,
            message=base.message,
            traceback=base.traceback,
            retry_requested=True,
            countdown=exc.countdown,
            max_retries=getattr(exc, "max_retries", None),
        )
    return ErrorInfo(type(exc).__name__, str(exc), _format(exc))


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def time_limit_error(limit: float) -> ErrorInfo:
    """The error recorded when the hard time limit stops a task."""
    return ErrorInfo(TimeLimitExceeded.__name__, f"task exceeded its time limit ({limit:g} s)")


def soft_limit_error(limit: float) -> ErrorInfo:
    """The error recorded when a task let SoftTimeLimitExceeded escape without a message."""
    return ErrorInfo(
        SoftTimeLimitExceeded.__name__, f"task exceeded its soft time limit ({limit:g} s)"
    )


def invoke(task: Task, call: Call) -> Any:
    """Call the task function (a coroutine for async tasks); bound tasks get their context."""
    if task.bind:
        return task.fn(task.bound_context(call.request), *call.args, **call.kwargs)
    return task.fn(*call.args, **call.kwargs)
