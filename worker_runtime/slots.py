"""Free execution slots: a worker never asks for more messages than it can start.

A queue's puller reserves slots before it sends a pull request for that many
messages; each delivered message keeps one slot until its task's execution
resource is free again (for an orphaned thread, that is when the thread ends);
slots reserved for messages that never came are returned when the request ends.
"""

from __future__ import annotations

import asyncio
import contextlib


class SlotPool:
    """A counting pool of ``capacity`` slots shared by every queue of one worker."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._free = capacity
        # Waiters woken on every release; they check their own condition again.
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def free(self) -> int:
        """Slots nobody holds right now."""
        return self._free

    @property
    def busy(self) -> int:
        """Slots held by messages, reservations or orphaned threads."""
        return self.capacity - self._free

    async def reserve(self, most: int, *, gather: int = 1, linger: float = 0.0) -> int:
        """Wait for at least one free slot, then take up to ``most`` of them.

        When fewer than ``gather`` slots are free, wait up to ``linger`` seconds
        for more to free up first: one pull for many messages costs less than
        many pulls for one each, and their results and acks then leave together.
        """
        while self._free == 0:
            await self._changed()
        if self._free < gather and linger > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(linger):
                    while self._free < gather:
                        await self._changed()
        taken = min(self._free, max(1, most))
        self._free -= taken
        return taken

    def release(self, count: int = 1) -> None:
        """Give back ``count`` slots (callable from loop callbacks)."""
        if count <= 0:
            return
        self._free = min(self.capacity, self._free + count)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _changed(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if not waiter.done():  # cancelled: leave no stale waiter behind
                waiter.cancel()

    async def wait_idle(self) -> None:
        """Wait until every slot is free."""
        while self._free < self.capacity:
            await self._changed()
