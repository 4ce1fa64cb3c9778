"""Tasks and signal receivers for the signal and terminate tests.

Every receiver, and the tasks as they start, finish or are cancelled, append one JSON
line to the file named by $SIGNALS_LOG, which the test reads.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import sigerrors

from celeriac import signals
from celeriac.app import Celeriac
from celeriac.exceptions import ExceptionInfo, TaskError
from celeriac.task import Task

# sigerrors is allowed: its exceptions are rebuilt as themselves when the worker lacks them.
sig_app = Celeriac("signal-tests", exception_modules=["sigerrors"])


def note(**fields: Any) -> None:
    """Append one line to $SIGNALS_LOG (one write call, so lines never interleave)."""
    path = os.environ.get("SIGNALS_LOG")
    if path:
        line = json.dumps({"pid": os.getpid(), **fields}, default=repr) + "\n"
        with open(path, "a") as out:
            out.write(line)


@sig_app.task(name="sig.add")
def add(a: int, b: int) -> int:
    return a + b


@sig_app.task(name="sig.fail", max_retries=0)
def fail(text: str) -> None:
    raise ValueError(text)


@sig_app.task(name="sig.auto", autoretry_for=(ValueError,), max_retries=1,
              default_retry_delay=0.1)  # fmt: skip
def auto(text: str) -> None:
    raise ValueError(text)


@sig_app.task(name="sig.unstorable")
def unstorable() -> object:
    return object()  # not JSON: the result cannot be stored


class Noted(Task):
    """Notes what ``on_failure`` gets."""

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        note(hook="on_failure", task_id=task_id, **described(exc), einfo_type=einfo.type.__name__)


@sig_app.task(name="sig.user_timeout", base=Noted, max_retries=0)
def user_timeout(text: str) -> None:
    raise sigerrors.TimeoutError(text)


def described(exc: BaseException) -> dict[str, Any]:
    """What the tests check of an exception handed to a receiver or a hook."""
    return {
        "exception_type": type(exc).__name__,
        "exception": str(exc),
        "is_user_timeout": isinstance(exc, sigerrors.TimeoutError),
        "is_builtin_timeout": isinstance(exc, TimeoutError),
        "is_task_error": isinstance(exc, TaskError),  # a stand-in rebuilt from the record
    }


@sig_app.task(name="sig.asleep", max_retries=0)
async def asleep(seconds: float, marker: str) -> float:
    note(event="started", marker=marker)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        note(event="cancelled", marker=marker)
        raise
    note(event="finished", marker=marker)
    return seconds


@sig_app.task(name="sig.asleep_limited", max_retries=0, soft_time_limit=100, time_limit=120)
async def asleep_limited(seconds: float, marker: str) -> float:
    """The same with time limits: it runs under the worker's supervision."""
    return await asleep.fn(seconds, marker)  # type: ignore[no-any-return]


@sig_app.task(name="sig.sleep", max_retries=0)
def sleep(seconds: float, marker: str) -> float:
    note(event="started", marker=marker)
    time.sleep(seconds)
    note(event="finished", marker=marker)
    return seconds


@sig_app.task(name="sig.stubborn", max_retries=0)
def stubborn(seconds: float, marker: str) -> float:
    """Ignores SIGTERM: only SIGKILL stops it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    note(event="started", marker=marker)
    time.sleep(seconds)
    note(event="finished", marker=marker)
    return seconds


@signals.task_prerun.connect
def on_prerun(
    *, sender: Any = None, task_id: str = "", task: Any = None, args: Any = None,
    kwargs: Any = None, **extra: Any,
) -> None:  # fmt: skip
    note(signal="task_prerun", sender=sender.name, task_id=task_id, task=task.name,
         args=list(args), kwargs=kwargs, signal_name=extra["signal"].name,
         main_thread=threading.current_thread() is threading.main_thread())  # fmt: skip


@signals.task_postrun.connect
def on_postrun(
    *, sender: Any = None, task_id: str = "", retval: Any = None, state: str = "", **extra: Any
) -> None:
    shown = retval if isinstance(retval, int | float | str) else repr(retval)
    note(signal="task_postrun", sender=sender.name, task_id=task_id, retval=shown,
         retval_type=type(retval).__name__, state=str(state))  # fmt: skip


@signals.task_failure.connect
def on_failure(
    *, sender: Any = None, task_id: str = "", exception: Any = None, traceback: Any = None,
    einfo: Any = None, args: Any = None, kwargs: Any = None, **extra: Any,
) -> None:  # fmt: skip
    note(signal="task_failure", sender=sender.name, task_id=task_id, **described(exception),
         traceback=traceback, einfo_traceback=einfo.traceback, args=list(args),
         isinstance_value_error=isinstance(exception, ValueError),
         einfo_type=einfo.type.__name__)  # fmt: skip


@signals.task_prerun.connect(sender="sig.add")
def only_add(sender: Any = None, task_id: str = "", **extra: Any) -> None:
    note(signal="prerun_add_only", task_id=task_id)


@signals.task_prerun.connect
def broken(**extra: Any) -> None:
    raise RuntimeError("receiver broken on purpose")


@signals.task_postrun.connect
async def async_postrun(task_id: str = "", **extra: Any) -> None:
    await asyncio.sleep(0)
    note(signal="async_postrun", task_id=task_id)


@signals.worker_ready.connect
def on_ready(sender: Any = None, **extra: Any) -> None:
    note(signal="worker_ready", sender=sender.name)


@signals.worker_shutdown.connect
def on_shutdown(sender: Any = None, **extra: Any) -> None:
    note(signal="worker_shutdown", sender=sender.name)


@signals.worker_process_init.connect
def on_process_init(sender: Any = None, **extra: Any) -> None:
    note(signal="worker_process_init", sender=sender)
