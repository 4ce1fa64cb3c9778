"""The benchmark's tasks as a Celery app: Redis broker and result backend.

Configured the way Celery is commonly run in production: JSON, late acks (a
task is acknowledged after it ran), results in Redis; prefetch left at its default.
``BENCH_REDIS_URL`` names the server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from celery import Celery  # type: ignore[import-untyped]

from bench.work import burn as burn_loops

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def make_app(name: str) -> Any:
    """A Celery app on the benchmark's Redis, configured like the workers'."""
    celery = Celery(name, broker=REDIS_URL, backend=REDIS_URL)
    celery.conf.update(CONFIG)
    return celery


CONFIG = dict(
    task_default_queue="bench",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
app = make_app("bench")

# Celery ships no type information; this is the decorator's shape.
task: Callable[..., Callable[[Callable[..., Any]], Any]] = app.task


@task(name="bench.noop")
def noop() -> None:
    """Do nothing."""


@task(name="bench.sleep")
def sleep(seconds: float) -> None:
    """Wait like an I/O call."""
    time.sleep(seconds)


@task(name="bench.burn")
def burn(loops: int) -> int:
    """Pure-Python CPU work."""
    return burn_loops(loops)


@task(name="bench.stamp")
def stamp() -> float:
    """The wall-clock time the task started."""
    return time.time()
