"""The loop inside a ``--pool processes`` child: receive a call, run it, send the outcome.

Each call comes with the log context of the task it belongs to, so the lines the
task logs here name it as they would in the parent.
"""

from __future__ import annotations

import logging
import signal
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from celeriac.exceptions import SoftTimeLimitExceeded
from celeriac.signals import worker_process_init
from celeriac.worker_runtime.childreplies import pack, unsendable
from celeriac.worker_runtime.execution import Call, ErrorInfo, invoke, portable, task_error
from celeriac.worker_runtime.loading import load_app
from celeriac.worker_runtime.logs import LogSetup, TaskLogContext, apply_setup, task_context

log = logging.getLogger(__name__)


class _Running:
    """Whether a task runs now, so a late soft-limit signal never hits the idle loop."""

    def __init__(self) -> None:
        self.active = False


def serve(app_spec: str, conn: Connection, logging_setup: LogSetup) -> None:
    """Run calls from ``conn`` until the parent closes it or sends ``None``."""
    running = _Running()

    def soft_limit(signum: int, frame: FrameType | None) -> None:
        if running.active:
            raise SoftTimeLimitExceeded("soft time limit exceeded")

    signal.signal(signal.SIGUSR1, soft_limit)
    apply_setup(logging_setup)
    app = load_app(app_spec)
    worker_process_init.send(sender=None)  # receivers' errors are logged, never fatal
    # The parent sends work, and starts its time-limit clocks, only after this.
    conn.send(("ready", None))
    while True:
        try:
            work: tuple[Call, TaskLogContext | None] | None = conn.recv()
        except (EOFError, OSError):
            return
        if work is None:
            return
        call, context = work
        kind, payload = _run(app.tasks.get(call.task), call, context, running)
        try:
            reply = pack(kind, payload)
        except Exception as exc:  # a value pickle refuses, whatever it raises
            reply = unsendable(exc)
        conn.send(reply)


def _run(
    task: Any, call: Call, context: TaskLogContext | None, running: _Running
) -> tuple[str, Any]:
    if task is None:
        return "error", ErrorInfo("NotRegistered", f"task {call.task!r} is not in this app")
    with task_context(context or TaskLogContext(call.task_id, call.task)):
        running.active = True
        try:
            return "ok", invoke(task, call)
        except BaseException as exc:
            return "error", portable(task_error(task, exc))
        finally:
            running.active = False
