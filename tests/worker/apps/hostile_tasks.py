"""Tasks for the hostile-input and fault tests (tests/worker/test_hostile.py, test_faults.py).

Tasks that the tests count take a ``key`` first: each run appends one byte to the
file ``$HOSTILE_RUNS/<key>`` before doing anything else, so a test reads how many
times the function started (also across worker processes and after a crash).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

from celeriac.app import Celeriac

hostile_app = Celeriac("hostile-tests")
task = hostile_app.task

FIVE_MIB = 5 * 1024 * 1024


def count_run(key: str) -> int:
    """Record one run of ``key``; return how many runs there have been, this one included."""
    folder = os.environ.get("HOSTILE_RUNS")
    if not folder:
        return 0
    path = Path(folder) / key
    with path.open("ab") as f:  # O_APPEND: one byte per run, atomic across processes
        f.write(b"x")
    return path.stat().st_size


@task(name="h.ok")
def ok(x: object) -> object:
    return x


@task(name="h.aok")
async def aok(x: object) -> object:
    return x


@task(name="h.step", max_retries=0)
def step(key: str) -> str:
    """The first task of a chain whose next step cannot be sent."""
    count_run(key)
    return key


@task(name="h.big", max_retries=3)
def big(key: str) -> str:
    count_run(key)
    return "x" * FIVE_MIB


@task(name="h.set", max_retries=3)
def not_json(key: str) -> object:
    count_run(key)
    return {1, 2}


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ refuses")


@task(name="h.unprintable", max_retries=0)
def unprintable(key: str) -> None:
    count_run(key)
    raise UnprintableError


@task(name="h.aexit", max_retries=0)
async def aexit(key: str) -> None:
    count_run(key)
    sys.exit(3)


@task(name="h.exit", max_retries=0)
def sync_exit(key: str) -> None:
    count_run(key)
    sys.exit(3)


@task(name="h.interrupt", max_retries=0)
def interrupt(key: str) -> None:
    count_run(key)
    raise KeyboardInterrupt


@task(name="h.ainterrupt", max_retries=0)
async def ainterrupt(key: str) -> None:
    count_run(key)
    raise KeyboardInterrupt


@task(name="h.crash", max_retries=1)
async def crash(key: str) -> None:
    """Kill the whole worker process: no outcome, ever."""
    count_run(key)
    os._exit(1)


@task(name="h.crash10", max_retries=10)
async def crash10(key: str) -> None:
    count_run(key)
    os._exit(1)


@task(name="h.always_fail", autoretry_for=(ValueError,), max_retries=5, retry_backoff=0.1,
      retry_jitter=False)  # fmt: skip
def always_fail(key: str) -> None:
    count_run(key)
    raise ValueError(f"always fails ({key})")


@task(name="h.hang_once", max_retries=3)
def hang_once(key: str) -> str:
    """Hang forever in C on the first run (no time limit); return on later runs."""
    if count_run(key) == 1:
        threading.Event().wait()
    return "finished on a later run"


@task(name="h.echo", max_retries=50)
async def echo(x: object, pause: float = 0.01) -> object:
    """The fault suite's task: a short pause, then the input back."""
    await asyncio.sleep(pause)
    return x
