"""Worker log lines name the task they concern.

The task id lives in a context variable set while a message is handled; asyncio
tasks and the threads the worker starts copy the context, so every line logged
during a task, also by the task's own code, carries its id.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

current_task_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "celeriac_task_id", default="-"
)

_HANDLER_NAME = "celeriac-worker"
LOG_FORMAT = "%(asctime)s %(levelname)s [%(processName)s] [task %(task_id)s] %(name)s: %(message)s"


class TaskIdFilter(logging.Filter):
    """Adds ``task_id`` to every record (``-`` outside a task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "task_id"):
            record.task_id = current_task_id.get()
        return True


def _not_tls_close_noise(record: logging.LogRecord) -> bool:
    # asyncio warns on every TLS connection closed by the peer (each refused attempt).
    return "eof_received() has no effect when using ssl" not in record.getMessage()


def configure_logging(level: str) -> None:
    """Log to stderr at ``level`` with the task id on each line."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(TaskIdFilter())
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    # Replace only our own handler, so configuring twice does not log lines twice.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER_NAME]
    root.addHandler(handler)
    root.setLevel(level)
    # nats-py logs every reconnect attempt at ERROR; the worker logs its own summary.
    logging.getLogger("nats").setLevel(max(logging.getLevelName(level), logging.WARNING))
    asyncio_log = logging.getLogger("asyncio")
    if _not_tls_close_noise not in asyncio_log.filters:
        asyncio_log.addFilter(_not_tls_close_noise)


@contextmanager
def task_context(task_id: str) -> Iterator[None]:
    """Mark the lines logged inside the block as concerning ``task_id``."""
    token = current_task_id.set(task_id)
    try:
        yield
    finally:
        current_task_id.reset(token)
