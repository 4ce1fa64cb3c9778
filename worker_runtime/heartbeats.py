"""``in_progress`` for every message a worker holds, sent from one loop.

A task that runs longer than the consumer's ``ack_wait`` must tell JetStream it
is alive, or the message goes to another worker. One loop for all held messages
costs nothing per task; a timer task per message would cost a task creation and
a cancellation for every one of them, however short.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol


class Beating(Protocol):
    """A held message that can say it is still being worked on."""

    heartbeat_interval: float

    async def beat(self) -> None:
        """Send ``in_progress``; must not raise."""


class Heartbeats:
    """The held messages and when each is due for its next ``in_progress``."""

    def __init__(self) -> None:
        self._due: dict[Beating, float] = {}
        self._tick = 1.0  # never sleep past the shortest interval seen
        self._loop_task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._due)

    def add(self, held: Beating) -> None:
        """Start beating for ``held``, first one interval from now."""
        loop = asyncio.get_running_loop()
        self._due[held] = loop.time() + held.heartbeat_interval
        self._tick = min(self._tick, held.heartbeat_interval)
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = loop.create_task(self._run(), name="celeriac-heartbeats")

    def discard(self, held: Beating) -> None:
        """Stop beating for ``held`` (it was settled)."""
        self._due.pop(held, None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._due:
            now = loop.time()
            earliest = min(self._due.values())
            await asyncio.sleep(max(0.0, min(earliest - now, self._tick)))
            now = loop.time()
            for held in [h for h, due in self._due.items() if due <= now]:
                if held in self._due:  # not settled meanwhile
                    self._due[held] = now + held.heartbeat_interval
                    await held.beat()

    async def stop(self) -> None:
        """Stop the loop (the worker is shutting down)."""
        self._due.clear()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
