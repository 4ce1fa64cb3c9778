"""Catching up slots the server missed: one run for the latest, asked for by the workers.

A single nats-server killed over a slot fires nothing for it when it is back (a
graceful restart or a leader change fires each schedule once, which the workers
handle as that slot's fire). So a worker looks at its queues' schedules when it
starts and each time its connection comes back (after ``CATCH_UP_GRACE``, the time
a regular fire has to be handled): for a schedule whose latest slot has no run
recorded and may still start, it publishes a catch-up fire. The fire's message id
makes the requests of many workers one; its run is the slot's one run, whichever
of it and a late regular fire comes first. The operator does the same for
TaskSchedules, so a queue whose pool is scaled to zero is caught up too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from celeriac import schedulestore
from celeriac.periodic import CATCH_UP_GRACE, missed_slot

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from celeriac.broker import Broker

log = logging.getLogger(__name__)

# Looks at the schedules this many times, CATCH_UP_GRACE apart, while reading them fails
# (on a cluster JetStream may still be electing leaders just after a reconnect).
CHECK_ATTEMPTS = 3


class CatchUp:
    """Asks for the runs of missed slots on start and after each reconnect."""

    def __init__(self, broker: Broker, queues: Sequence[str]) -> None:
        self._broker = broker
        self._queues = list(queues)
        self._tasks: set[asyncio.Task[None]] = set()
        self._remove = broker.connection.on_reconnect(self.soon)

    def soon(self) -> None:
        """Check once a regular fire has had its time to be handled."""
        task = asyncio.get_running_loop().create_task(self._later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _later(self) -> None:
        for _ in range(CHECK_ATTEMPTS):
            await asyncio.sleep(CATCH_UP_GRACE.total_seconds())
            if await self.check() is not None:
                return

    async def check(self) -> int | None:
        """Ask for every missed slot's run now; how many were asked for, None when the
        schedules could not be read. Never raises: a failure is logged."""
        js = self._broker.js
        try:
            found = await schedulestore.list_schedules(js, self._queues)
        except Exception as exc:
            log.warning("could not look for missed schedule slots: %r", exc)
            return None
        asked = 0
        for info in found:
            try:
                asked += await self._catch_up(js, info)
            except Exception as exc:  # one schedule's trouble must not hide the others
                log.warning("schedule %s: could not look for a missed slot: %r", info.name, exc)
        return asked

    async def _catch_up(self, js: JetStreamContext, info: schedulestore.ScheduleInfo) -> int:
        if info.suspended:
            return 0
        slot = missed_slot(info.periodic, info.state, info.stored_at, datetime.now(UTC))
        if slot is None:
            return 0
        await schedulestore.request_catch_up(js, info.periodic, slot, info.signature)
        log.warning(
            "schedule %s: slot %s went by without a run; asked for one",
            info.name, f"{slot:%Y-%m-%dT%H:%M:%SZ}",
        )  # fmt: skip
        return 1

    async def stop(self) -> None:
        """Stop looking; cancel a pending check."""
        self._remove()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
