"""Pull requests against a durable JetStream consumer, sized to what the worker can start.

nats-py's ``PullSubscription.fetch`` drains whatever sits in its inbox, which can
hand out more messages than asked for; here each request has its own accounting:
exactly one request is outstanding per queue, it asks for ``n`` messages, and it
ends on a status reply or at its expiry. If the client gives up on a request the
server may still answer (a lost reply, a reconnect), so the inbox is replaced:
a late message then goes nowhere and returns after ``ack_wait``, and the worker
never holds more messages than slots.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)

_STATUS = "Status"
_HEARTBEAT = "100"
# How much longer than the request's expiry the client waits for the server's 408.
_GRACE = 2.0


class PullRequester:
    """One durable consumer's pull requests; not safe for concurrent ``pull`` calls."""

    def __init__(self, nc: Client, stream: str, consumer: str) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox: asyncio.Queue[Msg] = asyncio.Queue()
        self._sub: Subscription | None = None
        self._deliver = ""
        # How the last request ended: a status code, "timeout", or "full" (batch filled).
        self.last_end = ""

    async def _subscribe(self) -> None:
        await self.close()
        inbox: asyncio.Queue[Msg] = asyncio.Queue()
        self._inbox = inbox

        async def deliver(msg: Msg) -> None:
            inbox.put_nowait(msg)

        self._deliver = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._deliver, cb=deliver)

    async def close(self) -> None:
        """Drop the inbox subscription."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception as exc:  # a closed connection has nothing to unsubscribe
                log.debug("unsubscribe of pull inbox failed: %s", exc)

    async def pull(self, batch: int, expires: float) -> AsyncIterator[Msg]:
        """Ask for up to ``batch`` messages, yielding each as soon as it arrives.

        Ends when ``batch`` messages came, the server ends the request (a status
        reply such as 408 at expiry), or the client stops waiting.
        """
        if self._sub is None:
            await self._subscribe()
        request = {"batch": batch, "expires": int(expires * 1e9)}
        await self._nc.publish(self._subject, json.dumps(request).encode(), reply=self._deliver)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + expires + _GRACE
        received = 0
        self.last_end = "full"
        while received < batch:
            try:
                # What already arrived is taken without a wait (no timer, no task), so a
                # burst is handed out in one loop iteration and its acks leave together.
                if self._inbox.empty():
                    msg = await asyncio.wait_for(self._inbox.get(), deadline - loop.time())
                else:
                    msg = self._inbox.get_nowait()
            except TimeoutError:
                # No end-of-request reply: the request may outlive us on the server.
                log.debug("pull request on %s got no reply; replacing the inbox", self._subject)
                self.last_end = "timeout"
                await self._subscribe()
                return
            status = msg.headers.get(_STATUS) if msg.headers else None
            if status is None and not msg.reply:
                continue  # not a JetStream delivery; nothing to settle
            if status is None:
                received += 1
                yield msg
            elif status != _HEARTBEAT:
                self.last_end = status
                if status not in ("404", "408"):
                    desc = msg.headers.get("Description", "") if msg.headers else ""
                    log.debug("pull request on %s ended: %s %s", self._subject, status, desc)
                return
