"""One message held by the worker: settled exactly once, kept alive while its task runs.

Whoever settles first wins: the handler acking a finished task, or the shutdown
path NAKing a task it gave up waiting for. A heartbeat sends ``in_progress``
(about a third of the consumer's ``ack_wait``) so a live long task is never
redelivered to another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg

log = logging.getLogger(__name__)


class Delivery:
    """A JetStream message from ``queue`` and what became of it."""

    def __init__(self, msg: Msg, queue: str, heartbeat_interval: float) -> None:
        self.msg = msg
        self.queue = queue
        self.settled = False
        self._interval = heartbeat_interval
        self._heartbeat: asyncio.Task[None] | None = None

    @property
    def deliveries(self) -> int:
        """How many times JetStream has delivered this message (1 on the first try)."""
        return int(self.msg.metadata.num_delivered)

    @property
    def stream_sequence(self) -> int:
        """The message's sequence in the work stream."""
        return int(self.msg.metadata.sequence.stream)

    def start_heartbeat(self) -> None:
        """Begin sending ``in_progress`` until settled."""
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(), name="celeriac-in-progress")

    async def _beat(self) -> None:
        while not self.settled:
            await asyncio.sleep(self._interval)
            if self.settled:
                return
            try:
                await self.msg.in_progress()
            except Exception as exc:  # disconnected: the server may redeliver; nothing to do
                log.debug("in_progress failed: %s", exc)

    def stop_heartbeat(self) -> None:
        """Stop sending ``in_progress``."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    async def ack(self) -> None:
        """The task is done: remove the message from the work stream."""
        await self._settle("ack", self.msg.ack)

    async def nak(self, delay: float | None = None) -> None:
        """Redeliver the message, after ``delay`` seconds (at once when None)."""
        await self._settle("nak", lambda: self.msg.nak(delay=delay if delay else None))

    async def term(self) -> None:
        """Never redeliver the message (it has been dead-lettered)."""
        await self._settle("term", self.msg.term)

    async def _settle(self, what: str, action: Callable[[], Awaitable[None]]) -> None:
        if self.settled:
            return
        self.settled = True
        self.stop_heartbeat()
        try:
            await action()
        except Exception:
            self.settled = False  # not sent; the shutdown path may still try
            raise
        log.debug("%s sent (delivery %d)", what, self.deliveries)

    async def nak_quietly(self) -> None:
        """NAK for immediate redelivery, ignoring a closed connection (shutdown path)."""
        with contextlib.suppress(Exception):
            await self.nak()
