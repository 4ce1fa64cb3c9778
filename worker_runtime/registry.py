"""The worker's entry in the ``celeriac_workers`` bucket: announced, kept fresh, removed.

The record is written when the worker starts, every ``HEARTBEAT_SECONDS`` after, and
once more when it starts draining; it is deleted when the worker stops. A failed
write is logged once and tried again at the next heartbeat: the registry is for
people watching, and must never hold up the tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from celeriac.protocol import names
from celeriac.protocol.workers import (
    HEARTBEAT_SECONDS,
    WORKERS_TTL_SECONDS,
    WorkerRecord,
    worker_key,
)

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from celeriac.broker import Broker

log = logging.getLogger(__name__)
# Seconds the final delete may take when the worker stops.
_DELETE_TIMEOUT = 2.0


class Registry:
    """Heartbeats ``record()`` into the workers bucket until stopped."""

    def __init__(self, broker: Broker, name: str, record: Callable[[], WorkerRecord]) -> None:
        self._broker = broker
        self.key = worker_key(name)
        self._record = record
        self._task: asyncio.Task[None] | None = None
        self._kv: KeyValue | None = None
        self._failing = False

    async def start(self) -> None:
        """Announce the worker now, then every HEARTBEAT_SECONDS."""
        await self.beat()
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            await self.beat()

    async def beat(self) -> bool:
        """Write the record now; False (logged once per outage) when that failed."""
        try:
            if self._kv is None:
                self._kv = await self._broker.declarer.bucket(
                    names.WORKERS_BUCKET, ttl=WORKERS_TTL_SECONDS
                )
            await self._kv.put(self.key, self._record().dumps())
        except Exception as exc:
            if not self._failing:
                log.warning("could not write this worker's record to %s: %r",
                            names.WORKERS_BUCKET, exc)  # fmt: skip
            self._failing = True
            return False
        if self._failing:
            log.info("this worker's record is written again")
        self._failing = False
        return True

    async def stop(self) -> None:
        """Stop heartbeating and remove the record (bounded: NATS may be gone)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._kv is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._kv.delete(self.key), _DELETE_TIMEOUT)
