"""Worker log lines name the task they concern.

The task (id, name, queue) lives in a context variable set while a message is
handled; asyncio tasks and the threads the worker starts copy the context, so every
line logged during a task, also by the task's own code, carries it. A
``--pool processes`` child gets the task with each call (see ``childloop``).

Two formats: ``text`` (``[task <id>]`` on each line) and ``json`` (one object per
line, see :mod:`celeriac.logformat`, with ``task_id``, ``task``, ``queue`` and
``worker`` fields).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from celeriac.logformat import DEFAULT_LOG_FORMAT, JsonFormatter, RecordFields


class TaskLogContext(NamedTuple):
    """What a log line says about the task it was logged in."""

    id: str
    task: str | None = None
    queue: str | None = None


current_task: contextvars.ContextVar[TaskLogContext | None] = contextvars.ContextVar(
    "celeriac_task", default=None
)

_HANDLER_NAME = "celeriac-worker"
LOG_FORMAT = "%(asctime)s %(levelname)s [%(processName)s] [task %(task_id)s] %(name)s: %(message)s"


@dataclass(frozen=True)
class LogSetup:
    """How a worker process logs (picklable: a process-pool child gets the parent's)."""

    level: str = "INFO"
    format: str = DEFAULT_LOG_FORMAT
    worker: str | None = None


class _Current:
    """The setup of this process, as last configured (handed to process-pool children)."""

    setup = LogSetup()


def set_task(task_id: str, task: str | None = None, queue: str | None = None) -> None:
    """Mark the lines logged from now on, in this context, as concerning this task."""
    current_task.set(TaskLogContext(task_id, task, queue))


class TaskIdFilter(logging.Filter):
    """Adds ``task_id`` to every record (``-`` outside a task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "task_id"):
            context = current_task.get()
            record.task_id = context.id if context else "-"
            record.celeriac_task = context
        return True


def _task_fields(worker: str | None) -> RecordFields:
    def fields(record: logging.LogRecord) -> Mapping[str, Any]:
        out: dict[str, Any] = {}
        context: TaskLogContext | None = getattr(record, "celeriac_task", None)
        if context is not None:
            out["task_id"] = context.id
            if context.task:
                out["task"] = context.task
            if context.queue:
                out["queue"] = context.queue
        if worker:
            out["worker"] = worker
        return out

    return fields


def _not_tls_close_noise(record: logging.LogRecord) -> bool:
    # asyncio warns on every TLS connection closed by the peer (each refused attempt).
    return "eof_received() has no effect when using ssl" not in record.getMessage()


def configure_logging(level: str, log_format: str = DEFAULT_LOG_FORMAT) -> None:
    """Log to stderr at ``level`` in ``log_format`` (text or json) with the task on each line."""
    _install(LogSetup(level, log_format, _Current.setup.worker))


def set_worker_name(name: str) -> None:
    """Name the worker in JSON lines from now on (also in process-pool children started later)."""
    _install(LogSetup(_Current.setup.level, _Current.setup.format, name))


def log_setup() -> LogSetup:
    """How this process logs now."""
    return _Current.setup


def apply_setup(setup: LogSetup) -> None:
    """Log as ``setup`` says (in a process-pool child)."""
    _install(setup)


def _install(setup: LogSetup) -> None:
    _Current.setup = setup
    handler = logging.StreamHandler()
    if setup.format == "json":
        handler.setFormatter(JsonFormatter(_task_fields(setup.worker)))
    else:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(TaskIdFilter())
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    # Replace only our own handler, so configuring twice does not log lines twice.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER_NAME]
    root.addHandler(handler)
    root.setLevel(setup.level)
    # nats-py logs every reconnect attempt at ERROR; the worker logs its own summary.
    logging.getLogger("nats").setLevel(max(logging.getLevelName(setup.level), logging.WARNING))
    asyncio_log = logging.getLogger("asyncio")
    if _not_tls_close_noise not in asyncio_log.filters:
        asyncio_log.addFilter(_not_tls_close_noise)


@contextmanager
def task_context(context: TaskLogContext | None) -> Iterator[None]:
    """Mark the lines logged inside the block as concerning the task ``context`` names."""
    token = current_task.set(context)
    try:
        yield
    finally:
        current_task.reset(token)
