"""Tasks the SDK end-to-end tests run in real worker processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celeriac.app import Celeriac

canvas_app = Celeriac("sdk-e2e", default_queue=os.environ.get("SDK_E2E_QUEUE", "default"))
task = canvas_app.task


@task(name="cv.add")
def add(a: int, b: int) -> int:
    return a + b


@task(name="cv.mul")
async def mul(a: int, b: int) -> int:
    return a * b


@task(name="cv.total")
def total(values: list[int], log: str | None = None) -> int:
    """A chord callback; appends a line to ``log`` per run so tests can count runs."""
    if log is not None:
        with Path(log).open("a") as fh:
            fh.write(f"{sum(values)}\n")
    return sum(values)


@task(name="cv.flaky", bind=True, autoretry_for=(RuntimeError,), max_retries=4,
      retry_backoff=0.05, retry_jitter=False)  # fmt: skip
def flaky(self: Any, value: int, failures: int) -> int:
    """Fails its first ``failures`` attempts, then returns ``value``."""
    if self.request.retries < failures:
        raise RuntimeError(f"attempt {self.request.retries + 1} fails on purpose")
    return value


@task(name="cv.broken", autoretry_for=(ValueError,), max_retries=1, retry_backoff=0.05,
      retry_jitter=False)  # fmt: skip
def broken(value: int) -> int:
    raise ValueError(f"broken on {value}")


@task(name="cv.spawn")
def spawn(a: int, b: int) -> str:
    """A sync task that submits another task (blocking call from a worker thread)."""
    return add.delay(a, b).id


@task(name="cv.aspawn")
async def aspawn(a: int, b: int) -> str:
    """An async task that submits another task with the async twin."""
    return (await add.adelay(a, b)).id


@task(name="proj.tasks.add")
def doc_add(a: int, b: int) -> int:
    """The task named in docs/protocol.md's example."""
    return a + b


@task(name="cv.note")
def note(value: Any, log: str) -> Any:
    """Appends ``value`` to ``log`` (an errback gets the failed task's id): runs are counted."""
    with Path(log).open("a") as fh:
        fh.write(f"{value}\n")
    return value
