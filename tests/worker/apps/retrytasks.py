"""Tasks for the retry, time-limit and hook tests (tests/worker/test_retries.py).

Each task takes a ``key`` first and appends one JSON line per event to
``$RETRY_EVENTS/<key>`` (a run, a hook call with its arguments), so a test reads what
happened in which order, across worker processes and pool children.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from celeriac.app import Celeriac
from celeriac.exceptions import (
    ExceptionInfo,
    MaxRetriesExceededError,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
)
from celeriac.task import Task

retry_app = Celeriac("retry-tests")
task = retry_app.task


def record(key: str, event: str, **details: Any) -> int:
    """Append one event for ``key``; return how many runs of it there have been."""
    path = Path(os.environ["RETRY_EVENTS"]) / key
    line = json.dumps({"event": event, "pid": os.getpid(), **details}) + "\n"
    with path.open("a") as f:  # one short write per line: whole lines across processes
        f.write(line)
    return sum(1 for line in path.read_text().splitlines() if '"event": "run"' in line)


@task(name="r.plain")
def plain(key: str) -> None:
    record(key, "run")
    raise ValueError("plain failure")


@task(name="r.auto", autoretry_for=(ValueError,), max_retries=2, retry_backoff=0.1,
      retry_jitter=False)  # fmt: skip
def auto(key: str) -> None:
    record(key, "run")
    raise ValueError("still failing")


@task(name="r.auto_then_ok", autoretry_for=(ConnectionError,), retry_kwargs={"countdown": 0.1})
def auto_then_ok(key: str) -> str:
    if record(key, "run") < 3:
        raise ConnectionError("not yet")
    return "third time"


@task(name="r.dont", autoretry_for=(Exception,), dont_autoretry_for=(KeyError,))
def dont(key: str) -> None:
    record(key, "run")
    raise KeyError("never retried")


@task(name="r.retry_past_max", bind=True, max_retries=1, default_retry_delay=0.1)
def retry_past_max(self: Any, key: str) -> None:
    record(key, "run", retries=self.request.retries)
    try:
        self.retry()
    except MaxRetriesExceededError:
        record(key, "max retries exceeded")
        raise


@task(name="r.retry_exc", bind=True, max_retries=1)
def retry_exc(self: Any, key: str) -> None:
    record(key, "run")
    self.retry(exc=OSError("disk full"), countdown=0.1)


@task(name="r.retry_more", bind=True, max_retries=1)
def retry_more(self: Any, key: str) -> int:
    """Asks for more retries than its max_retries through self.retry(max_retries=)."""
    runs = record(key, "run")
    if runs < 4:
        self.retry(countdown=0.05, max_retries=3)
    return runs


@task(name="r.hard", time_limit=0.5, autoretry_for=(Exception,), default_retry_delay=0.1)
async def hard(key: str) -> None:
    record(key, "run")
    await asyncio.sleep(30)


@task(name="r.hard_listed", time_limit=0.5, autoretry_for=(TimeLimitExceeded,), max_retries=1,
      default_retry_delay=0.1)  # fmt: skip
async def hard_listed(key: str) -> None:
    record(key, "run")
    await asyncio.sleep(30)


@task(name="r.asoft", soft_time_limit=0.3, time_limit=10)
async def asoft(key: str) -> str:
    record(key, "run")
    try:
        await asyncio.sleep(30)
    except SoftTimeLimitExceeded as exc:
        record(key, "soft", message=str(exc))
        return "cleaned up"
    return "finished"


@task(name="r.asoft_ignored", soft_time_limit=0.3, time_limit=1.0)
async def asoft_ignored(key: str) -> str:
    record(key, "run")
    try:
        await asyncio.sleep(30)
    except SoftTimeLimitExceeded:
        record(key, "soft")
    try:
        await asyncio.sleep(30)  # past the soft limit: only the hard limit ends it
    except asyncio.CancelledError:
        record(key, "cancelled")
        raise
    return "finished"


@task(name="r.killed_once")
def killed_once(key: str) -> str:
    """Kills its worker on the first run: no outcome, the message comes back."""
    if record(key, "run") == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


# Hooks ------------------------------------------------------------------------------------


def _exc(exc: BaseException) -> list[str]:
    return [type(exc).__name__, str(exc)]


class Hooked(Task):
    """Records every hook call with its arguments."""

    def before_start(self, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        record(args[0], "before_start", task_id=task_id, args=list(args), kwargs=dict(kwargs))

    def on_success(
        self, retval: Any, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        record(args[0], "on_success", retval=retval, task_id=task_id, kwargs=dict(kwargs))

    def on_retry(
        self,
        exc: BaseException,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        record(args[0], "on_retry", exc=_exc(exc), task_id=task_id, einfo_type=einfo.type.__name__,
               traceback=einfo.traceback)  # fmt: skip

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        record(args[0], "on_failure", exc=_exc(exc), task_id=task_id,
               einfo_type=einfo.type.__name__, traceback=einfo.traceback,
               is_value_error=isinstance(exc, ValueError))  # fmt: skip

    def after_return(  # noqa: PLR0917 - Celery's signature
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: ExceptionInfo | None,
    ) -> None:
        shown = _exc(retval) if isinstance(retval, BaseException) else retval
        record(args[0], "after_return", status=status, retval=shown, task_id=task_id,
               einfo=einfo is not None)  # fmt: skip


class Brittle(Hooked):
    """A hook that raises: the outcome must stand."""

    def on_success(
        self, retval: Any, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        record(args[0], "on_success")
        raise RuntimeError("hook broken")


class AsyncHooked(Task):
    """An ``async def`` hook runs on the worker's loop."""

    async def on_success(
        self, retval: Any, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        await asyncio.sleep(0)
        record(args[0], "async on_success", retval=retval)


def register(cls: type[Task], name: str, **options: Any) -> Callable[[Callable[..., Any]], Task]:
    """Register a function as a task of class ``cls`` (what ``@app.task(base=cls)`` does)."""

    def wrap(fn: Callable[..., Any]) -> Task:
        made = cls(retry_app, fn, name=name, client=retry_app.client, **options)
        retry_app.tasks[name] = made
        return made

    return wrap


@register(Hooked, "r.hooked_ok")
def hooked_ok(key: str, factor: int = 2) -> int:
    record(key, "run")
    return 21 * factor


@register(Hooked, "r.hooked_fail", autoretry_for=(ValueError,), max_retries=1,
          default_retry_delay=0.1)  # fmt: skip
def hooked_fail(key: str) -> None:
    record(key, "run")
    raise ValueError(f"bad input {key}")


@register(Hooked, "r.hooked_hard", time_limit=0.5)
async def hooked_hard(key: str) -> None:
    record(key, "run")
    await asyncio.sleep(30)


@register(Brittle, "r.brittle")
def brittle(key: str) -> str:
    record(key, "run")
    return "kept"


@register(AsyncHooked, "r.async_hooked")
async def async_hooked(key: str) -> str:
    record(key, "run")
    return "async ok"


class AutoRetrying(Hooked):
    """Retry options as class attributes of a base class."""

    autoretry_for = (LookupError,)
    max_retries = 1
    default_retry_delay = 0.1


@task(name="r.base_class", base=AutoRetrying)
def base_class(key: str) -> None:
    record(key, "run")
    raise KeyError("missing")


@task(name="r.retry_more_quiet", bind=True, max_retries=1, ignore_result=True)
def retry_more_quiet(self: Any, key: str) -> None:
    """``r.retry_more`` ignoring its results: no RETRY record of its own to show."""
    runs = record(key, "run")
    if runs < 4:
        self.retry(countdown=0.05, max_retries=3)
    record(key, "done")


class ChildOnlyError(Exception):
    """Unpickles only in the process that raised it, as an exception whose module the
    worker's process cannot import would."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _child_only, (os.getpid(), str(self))


def _child_only(pid: int, text: str) -> ChildOnlyError:
    if os.getpid() != pid:
        raise ModuleNotFoundError("No module named 'only_in_the_child'")
    return ChildOnlyError(text)


@register(Hooked, "r.child_only_error")
def child_only_error(key: str) -> None:
    record(key, "run")
    raise ChildOnlyError("raised in the child")


class SlowStart(Task):
    """A ``before_start`` that outlives the task's time limit."""

    def before_start(self, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        record(args[0], "before_start")
        time.sleep(args[1])
        record(args[0], "before_start returned")


class AsyncSlowStart(Task):
    """The same as an ``async def`` hook: cancelled at the time limit."""

    async def before_start(
        self, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        record(args[0], "before_start")
        try:
            await asyncio.sleep(args[1])
        except asyncio.CancelledError:
            record(args[0], "before_start cancelled")
            raise


@register(SlowStart, "r.slow_start", time_limit=0.5, max_retries=0)
def slow_start(key: str, seconds: float) -> str:
    record(key, "run")
    return "ran"


@register(AsyncSlowStart, "r.aslow_start", time_limit=0.5, max_retries=0)
async def aslow_start(key: str, seconds: float) -> str:
    record(key, "run")
    return "ran"
