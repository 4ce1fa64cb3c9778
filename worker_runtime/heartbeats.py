"""``in_progress`` for every message a worker holds, sent from one loop.

A task that runs longer than the consumer's ``ack_wait`` must tell JetStream it
is alive, or the message goes to another worker. One loop looks over the held
messages every tick and beats for those due, so a short task costs nothing here:
no timer, no registration, no task of its own. The tick is the shortest interval
of the queues consumed, so a beat is at most one interval late (two intervals
between beats, two thirds of ``ack_wait``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Protocol

_DEFAULT_TICK = 1.0


class Beating(Protocol):
    """A held message that can say it is still being worked on."""

    heartbeat_interval: float
    next_beat: float  # on the loop's clock
    settled: bool

    async def beat(self) -> None:
        """Send ``in_progress``; must not raise."""


class Heartbeats:
    """Beats for what ``held()`` returns, each at its own interval."""

    def __init__(self, held: Callable[[], Iterable[Beating]]) -> None:
        self._held = held
        self._tick = _DEFAULT_TICK
        self._loop_task: asyncio.Task[None] | None = None

    def note_interval(self, interval: float) -> None:
        """A queue's messages need a beat this often: never sleep longer than that."""
        self._tick = min(self._tick, interval)

    def start(self) -> None:
        """Start the loop."""
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(
                self._run(), name="celeriac-heartbeats"
            )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._tick)
            now = loop.time()
            for held in list(self._held()):
                if not held.settled and held.next_beat <= now:
                    held.next_beat = now + held.heartbeat_interval
                    await held.beat()

    async def stop(self) -> None:
        """Stop the loop (the worker is shutting down)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
