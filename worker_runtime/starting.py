"""The start of an attempt: the task class's ``before_start`` hook, then the task.

As in Celery, the task's hard ``time_limit`` covers ``before_start``: a hook still
running at the limit ends the attempt with ``TimeLimitExceeded`` and the task does not
run. The hook runs inside the attempt, so ``revoke(terminate=True)`` stops it like the
task. An ``async def`` hook is cancelled; a plain ``def`` hook runs on a thread, which
cannot be stopped, so the attempt's slot stays taken until the thread returns. Without
a ``time_limit`` the hook is as unbounded as the task.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from celeriac.protocol.envelope import TaskMessage
from celeriac.worker_runtime import hooks
from celeriac.worker_runtime.coroutines import ended
from celeriac.worker_runtime.execution import Abandoned, Call, Outcome, time_limit_error

if TYPE_CHECKING:
    from celeriac.task import Task

log = logging.getLogger(__name__)


async def start(
    task: Task, message: TaskMessage, call: Call, attempt: Coroutine[Any, Any, Outcome]
) -> Outcome:
    """Call ``before_start`` (when the task's class has one) within the task's hard
    time limit, then await ``attempt``, which is never started if the hook overran."""
    if not hooks.overrides(task, "before_start"):
        return await attempt
    try:
        overran = await _before_start(task, message, call.time_limit)
    except BaseException:
        attempt.close()
        raise
    if overran is not None:
        attempt.close()
        return overran
    return await attempt


async def _before_start(task: Task, message: TaskMessage, limit: float | None) -> Outcome | None:
    """Run the hook; an outcome when it was still running at ``limit``."""
    # A sync hook's thread goes on whatever happens to this task: not cancelling it
    # keeps it done only when the thread has returned.
    on_thread = not inspect.iscoroutinefunction(task.before_start)
    hook = asyncio.ensure_future(hooks.before_start(task, message))
    try:
        await asyncio.wait({hook}, timeout=limit)
    except asyncio.CancelledError:  # terminated, or the worker is stopping
        if hook.done():
            raise
        if not on_thread:
            hook.cancel()
        raise Abandoned(ended(hook)) from None
    if hook.done():
        return None
    assert limit is not None
    log.warning("the before_start hook of %s passed the task's time limit (%g s); the task "
                "does not run", task.name, limit)  # fmt: skip
    if not on_thread:
        hook.cancel()
    return Outcome(error=time_limit_error(task, limit), still_running=ended(hook))
