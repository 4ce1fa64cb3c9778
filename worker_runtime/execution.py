"""What running one task function produces, independent of where it ran.

Every pool turns a call into an :class:`Outcome`: a value or an :class:`ErrorInfo`
(plain data, so an error can cross a process boundary), plus, for a thread that
outlived its hard time limit, a future that ends with the thread.
"""

from __future__ import annotations

import asyncio
import pickle
import traceback
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from celeriac.current import Caller, set_calling_task
from celeriac.exceptions import Retry, SoftTimeLimitExceeded, TimeLimitExceeded
from celeriac.worker_runtime.backoff import autoretries

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
    # Set when the task's autoretry_for retries this error by itself.
    autoretry: bool = False
    # The module of the exception's type (ResultRecord.exc_module).
    exc_module: str | None = None
    # The exception itself, for the task's hooks: never stored or sent on the wire
    # (a processes-pool child sends it back only when it survives pickling).
    exception: BaseException | None = field(default=None, compare=False, repr=False)

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


class Abandoned(asyncio.CancelledError):
    """An attempt cancelled from outside whose code had not finished after a grace:
    ``still_running`` ends with it, so its slot is kept until then."""

    def __init__(self, still_running: asyncio.Future[None]) -> None:
        super().__init__("abandoned while still running")
        self.still_running = still_running


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
    # The root of the workflow the message belongs to (the tasks it submits share it).
    root_id: str | None = None


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


# What a result record and a dead letter keep of an error: enough to act on, small
# enough that the record always fits in a NATS message (the traceback keeps its end,
# where the exception was raised).
MAX_ERROR_CHARS = 4_000
MAX_TRACEBACK_CHARS = 16_000


def _clip(text: str, limit: int, *, keep_end: bool = False) -> str:
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    if keep_end:
        return f"[{cut} characters cut]...{text[-limit:]}"
    return f"{text[:limit]}...[{cut} characters cut]"


def _describe(exc: BaseException) -> str:
    # str() runs user code (__str__), which may itself raise.
    try:
        return _clip(str(exc), MAX_ERROR_CHARS)
    except BaseException as failed:  # anything a __str__ can do, SystemExit included
        return f"<str() of the exception raised {type(failed).__name__}>"


class ContainedExit(Exception):  # noqa: N818 - it holds, it is not an error of its own
    """A ``SystemExit`` or ``KeyboardInterrupt`` raised by task code, held as an ordinary
    exception: asyncio would otherwise let it stop the worker's event loop."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(original)
        self.original = original


async def contained(awaitable: Awaitable[Any]) -> Any:
    """Await task code; whatever it raises except cancellation is an ordinary exception."""
    try:
        return await awaitable
    except (asyncio.CancelledError, Exception):
        raise
    except BaseException as exc:
        raise ContainedExit(exc) from exc


def error_info(exc: BaseException) -> ErrorInfo:
    """Describe ``exc`` (a :class:`Retry` describes the error it wraps); never raises."""
    if isinstance(exc, ContainedExit):
        exc = exc.original
    if isinstance(exc, Retry):
        cause = exc.exc
        base = (
            error_info(cause)
            if cause is not None
            else ErrorInfo("Retry", _describe(exc) or "retry requested", _format(exc))
        )
        return replace(
            base,
            retry_requested=True,
            countdown=exc.countdown,
            max_retries=getattr(exc, "max_retries", None),
            exception=cause if cause is not None else exc,
        )
    kind = type(exc)
    return ErrorInfo(
        kind.__name__, _describe(exc), _format(exc), exception=exc, exc_module=kind.__module__
    )


def task_error(task: Task, exc: BaseException) -> ErrorInfo:
    """Describe what ``task`` raised, and whether its ``autoretry_for`` retries it."""
    info = error_info(exc)
    original = exc.original if isinstance(exc, ContainedExit) else exc
    if info.retry_requested or not task.autoretry_for:
        return info
    return replace(
        info, autoretry=autoretries(type(original), task.autoretry_for, task.dont_autoretry_for)
    )


def portable(info: ErrorInfo) -> ErrorInfo:
    """``info`` ready to cross a process boundary: without its exception unless a
    pickled copy of the exception comes back whole."""
    if info.exception is None:
        return info
    try:
        copy = pickle.loads(pickle.dumps(info.exception))
    except Exception:  # any class may refuse pickling, or need other arguments to load
        return replace(info, exception=None)
    return replace(info, exception=copy if isinstance(copy, BaseException) else None)


def _format(exc: BaseException) -> str:
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:  # formatting calls the exception's __str__ too
        text = "".join(traceback.format_tb(exc.__traceback__)) + f"{type(exc).__name__}\n"
    return _clip(text, MAX_TRACEBACK_CHARS, keep_end=True)


def _limit_error(task: Task, kind: type[BaseException], text: str) -> ErrorInfo:
    return ErrorInfo(
        kind.__name__,
        text,
        autoretry=autoretries(kind, task.autoretry_for, task.dont_autoretry_for),
        exception=kind(text),
        exc_module=kind.__module__,
    )


def time_limit_error(task: Task, limit: float) -> ErrorInfo:
    """The error recorded when the hard time limit stops a task."""
    return _limit_error(task, TimeLimitExceeded, f"task exceeded its time limit ({limit:g} s)")


def soft_limit_error(task: Task, limit: float) -> ErrorInfo:
    """The error recorded when a task was cancelled at its soft limit before it began."""
    text = f"task exceeded its soft time limit ({limit:g} s)"
    return _limit_error(task, SoftTimeLimitExceeded, text)


def invoke(task: Task, call: Call) -> Any:
    """Call the task function (a coroutine for async tasks); bound tasks get their context.

    While its code runs, the tasks it submits are its children (``current.calling_task``).
    """
    caller = Caller(call.task_id, call.root_id or call.task_id)
    if task.is_async:
        return _as_caller(caller, _call(task, call))
    before = set_calling_task(caller)
    try:
        return _call(task, call)
    finally:
        set_calling_task(before)


async def _as_caller(caller: Caller, coro: Awaitable[Any]) -> Any:
    before = set_calling_task(caller)
    try:
        return await coro
    finally:
        set_calling_task(before)


def _call(task: Task, call: Call) -> Any:
    if task.bind:
        return task.fn(task.bound_context(call.request), *call.args, **call.kwargs)
    return task.fn(*call.args, **call.kwargs)
