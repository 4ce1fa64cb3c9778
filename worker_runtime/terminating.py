"""``revoke(terminate=True)``: stopping an attempt that is already running.

The revocations bucket carries the request (``Celeriac-Terminate``); the worker's
copy of the bucket hands it to :class:`Terminator`, which knows the attempts this
worker runs and how each can be stopped:

- an ``async def`` task is cancelled: it sees ``CancelledError`` at its current
  ``await``. It runs inside the message's own asyncio task, so that task is
  cancelled and the cancellation is taken back once the attempt has unwound;
- a sync task of ``--pool processes`` has its child process signalled (SIGTERM,
  then SIGKILL after a grace; or SIGKILL at once), and the pool replaces the child;
- a sync task on a thread cannot be stopped: Python cannot kill a thread. The
  worker says so in its log, lets it run to its end, then discards its outcome.

Either way the attempt's outcome is :data:`TERMINATED` with the reason, and the
message ends REVOKED like any revoked task: not retried, acked, what depends on it
failed. Tracking an attempt costs one small object and a dict entry.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from celeriac.protocol.names import TERMINATE_SIGNALS
from celeriac.worker_runtime.execution import Abandoned, Call, ErrorInfo, Outcome, Pool
from celeriac.worker_runtime.processes import ProcessPool

if TYPE_CHECKING:
    from celeriac.task import Task

log = logging.getLogger(__name__)

# The exception type name of a terminated attempt's outcome (never a real exception).
TERMINATED = "Terminated"


def terminated_reason(outcome: Outcome) -> str | None:
    """The REVOKED reason when ``outcome`` is that of a terminated attempt, else None."""
    error = outcome.error
    if error is None or error.exc_type != TERMINATED:
        return None
    return error.message


class _Attempt:
    """One running attempt, as the terminate request finds it."""

    __slots__ = ("call", "cancelled", "reason", "runner", "task")

    def __init__(self, task: Task, call: Call, runner: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.call = call
        # The asyncio task awaiting the attempt: what cancelling an async task cancels.
        self.runner = runner
        self.reason: str | None = None  # set once a terminate request came
        self.cancelled = False  # the runner was cancelled and must be uncancelled once


class Terminator:
    """The attempts running in this worker, by task id, and how to stop each."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._running: dict[str, _Attempt] = {}

    async def run(self, task: Task, call: Call, attempt: Awaitable[Outcome]) -> Outcome:
        """Await ``attempt`` (the pool running ``call``) so that it can be terminated."""
        tracked = _Attempt(task, call, asyncio.current_task())
        self._running[call.task_id] = tracked
        try:
            outcome = await attempt
        except asyncio.CancelledError as exc:
            if not self._took_back(tracked):
                raise  # the worker itself is stopping
            # Code that outlived the cancellation keeps the slot until it ends.
            orphan = exc.still_running if isinstance(exc, Abandoned) else None
            outcome = Outcome(still_running=orphan)
        finally:
            if self._running.get(call.task_id) is tracked:
                del self._running[call.task_id]
        if tracked.reason is None:
            return outcome
        # The cancellation may have been swallowed by the task: take it back all the same.
        self._took_back(tracked)
        return Outcome(
            error=ErrorInfo(TERMINATED, tracked.reason),
            duration=outcome.duration,
            still_running=outcome.still_running,
        )

    @staticmethod
    def _took_back(tracked: _Attempt) -> bool:
        """Undo this module's cancellation; True unless another one is pending too."""
        if not tracked.cancelled or tracked.runner is None:
            return False
        tracked.cancelled = False
        return tracked.runner.uncancel() == 0

    def terminate(self, task_id: str, signal_name: str, reason: str) -> None:
        """Stop ``task_id`` if it runs here (a revoke with ``terminate=True``)."""
        tracked = self._running.get(task_id)
        if tracked is None or tracked.reason is not None:
            return
        if signal_name not in TERMINATE_SIGNALS:
            log.warning("terminate request with signal %r: using SIGTERM", signal_name)
            signal_name = "SIGTERM"
        tracked.reason = f"terminated ({signal_name}): {reason}"
        task, call = tracked.task, tracked.call
        if not task.is_async and isinstance(self._pool, ProcessPool):
            if self._pool.terminate(task_id, signal.Signals[signal_name]):
                log.warning("terminating %s %s: %s sent to its child process",
                            call.task, task_id, signal_name)  # fmt: skip
                return
            # No child holds it yet (it waits for one): cancelling the wait stops it.
        elif not task.is_async:
            tracked.reason = (
                f"{tracked.reason}; a thread cannot be stopped, so the task ran to its end "
                "and its outcome was discarded"
            )
            log.warning(
                "cannot terminate %s %s: it runs on a thread, which cannot be stopped; "
                "it will end REVOKED when it returns",
                call.task,
                task_id,
            )
            return
        if tracked.runner is None:
            return
        log.warning("terminating %s %s: cancelling it", call.task, task_id)
        tracked.cancelled = True
        tracked.runner.cancel(f"terminated ({signal_name})")
