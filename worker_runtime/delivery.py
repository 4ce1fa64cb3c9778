"""One message held by the worker: settled exactly once, kept alive while its task runs.

Whoever settles first wins: the handler acking a finished task, or the shutdown
path NAKing a task it gave up waiting for. Until then the worker's heartbeats
send ``in_progress`` (about every third of the consumer's ``ack_wait``) so a live
long task is never redelivered to another worker.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg

log = logging.getLogger(__name__)


def ack_position(reply: str) -> tuple[int, int]:
    """(times delivered, stream sequence) from a JetStream delivery's ack subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>``,
    or the newer form with a domain and an account hash after ``$JS.ACK`` (11 tokens,
    or 12 with a random suffix). Raises ValueError for anything else.
    """
    tokens = reply.split(".")
    if len(tokens) not in (9, 11, 12) or tokens[0] != "$JS" or tokens[1] != "ACK":
        raise ValueError(f"not a JetStream ack subject: {reply!r}")
    first = 4 if len(tokens) == 9 else 6
    return int(tokens[first]), int(tokens[first + 1])


class Delivery:
    """A JetStream message from ``queue`` and what became of it."""

    def __init__(self, msg: Msg, queue: str, heartbeat_interval: float, now: float) -> None:
        self.msg = msg
        self.queue = queue
        self.settled = False
        self.heartbeat_interval = heartbeat_interval
        # When the worker's heartbeats next send in_progress (loop clock), until settled.
        self.next_beat = now + heartbeat_interval
        self.deliveries, self.stream_sequence = ack_position(msg.reply)
        # For the worker's record (``inspect active``): when it was taken (loop clock),
        # and what it is once decoded.
        self.received = now
        self.task_id: str | None = None
        self.task: str | None = None

    async def beat(self) -> None:
        """Tell JetStream the message is still being worked on."""
        try:
            await self.msg.in_progress()
        except Exception as exc:  # disconnected: the server may redeliver; nothing to do
            log.debug("in_progress failed: %s", exc)

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
