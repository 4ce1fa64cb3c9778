"""The benchmark's tasks as a Celeriac app (``CELERIAC_NATS_URL`` names the server)."""

from __future__ import annotations

import asyncio
import time

from bench.work import burn as burn_loops
from celeriac.app import Celeriac

app = Celeriac("bench", default_queue="bench")


@app.task(name="bench.noop")
def noop() -> None:
    """Do nothing (threads or processes pool)."""


@app.task(name="bench.anoop")
async def anoop() -> None:
    """Do nothing (asyncio pool)."""


@app.task(name="bench.anoop_quiet", ignore_result=True)
async def anoop_quiet() -> None:
    """Do nothing and store no result (asyncio pool): the framework's bare cost."""


@app.task(name="bench.sleep")
def sleep(seconds: float) -> None:
    """Wait like a blocking I/O call."""
    time.sleep(seconds)


@app.task(name="bench.asleep")
async def asleep(seconds: float) -> None:
    """Wait like an awaited I/O call."""
    await asyncio.sleep(seconds)


@app.task(name="bench.burn")
def burn(loops: int) -> int:
    """Pure-Python CPU work."""
    return burn_loops(loops)


@app.task(name="bench.stamp")
def stamp() -> float:
    """The wall-clock time the task started."""
    return time.time()


@app.task(name="bench.astamp")
async def astamp() -> float:
    """The wall-clock time the task started (asyncio pool)."""
    return time.time()
