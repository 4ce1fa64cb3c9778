"""Pull requests against a durable JetStream consumer, sized to what the worker can start.

nats-py's ``PullSubscription.fetch`` drains whatever sits in its inbox, which can
hand out more messages than asked for; here each request has its own accounting:
exactly one request is outstanding per queue, it asks for ``n`` messages, and it
ends on a status reply, at its expiry, or when the connection drops.

All requests share one wildcard inbox, each naming its own reply subject there.
The server may still answer a request the client gave up on (a lost reply, or a
request nats-py buffered during an outage and sent on reconnect). Deliveries carry
the stream's subject, not the request's, so they are accounted by count: one the
current request has room for is handed out, any other is NAKed at once, so it
goes to a live request instead of waiting out ``ack_wait``, and the worker never
holds more messages than slots. Status replies do carry the request's subject, so
a late 408 cannot end the current request.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError

if TYPE_CHECKING:
    from celeriac.connection import Connection

log = logging.getLogger(__name__)

_STATUS = "Status"
_HEARTBEAT = "100"
# How much longer than the request's expiry the client waits for the server's 408.
_GRACE = 2.0
# How a request ended when the connection was (or went) down.
DISCONNECTED = "disconnected"


class PullRequester:
    """One durable consumer's pull requests; not safe for concurrent ``pull`` calls.

    With ``connection``, a request ends as soon as the connection drops.
    """

    def __init__(
        self, nc: Client, stream: str, consumer: str, connection: Connection | None = None
    ) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        # Deliveries of the current request; None says the connection dropped.
        self._inbox: asyncio.Queue[Msg | None] = asyncio.Queue()
        self._sub: Subscription | None = None
        self._prefix = ""
        self._reply = ""  # the current request's reply subject; "" between requests
        self._room = 0  # deliveries the current request still takes
        self._numbers = itertools.count()
        self._connection = connection
        self._unwatch: Callable[[], None] | None = None
        # How the last request ended: a status code, "timeout", "full" (batch filled)
        # or DISCONNECTED.
        self.last_end = ""
        # Deliveries no request had room for, NAKed for immediate redelivery.
        self.strays = 0

    async def _subscribe(self) -> None:
        self._prefix = self._nc.new_inbox() + "."
        self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._deliver)
        if self._connection is not None and self._unwatch is None:
            self._unwatch = self._connection.on_disconnect(self._disconnected)

    async def _deliver(self, msg: Msg) -> None:
        if msg.headers and msg.headers.get(_STATUS):
            if msg.subject == self._reply:
                self._inbox.put_nowait(msg)  # ends this request (or a heartbeat)
        elif self._room > 0 and msg.reply:
            self._room -= 1
            self._inbox.put_nowait(msg)
        else:
            await self._return(msg)

    async def _return(self, msg: Msg) -> None:
        """NAK a delivery no request takes (status replies need nothing)."""
        if not msg.reply or (msg.headers and msg.headers.get(_STATUS)):
            return
        self.strays += 1
        log.debug("NAKing a delivery no pull request has room for (%s)", msg.reply)
        try:
            await msg.nak()
        except Exception as exc:  # disconnected: it returns after ack_wait instead
            log.debug("NAK of a stray delivery failed: %s", exc)

    def _disconnected(self) -> None:
        if self._reply:
            self._inbox.put_nowait(None)

    async def close(self) -> None:
        """Drop the inbox subscription (deliveries still waiting in it are NAKed)."""
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        await self._return_leftovers()
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception as exc:  # a closed connection has nothing to unsubscribe
                log.debug("unsubscribe of pull inbox failed: %s", exc)

    async def _return_leftovers(self) -> None:
        while not self._inbox.empty():
            msg = self._inbox.get_nowait()
            if msg is not None:
                await self._return(msg)

    async def _ready(self) -> bool:
        """Subscribe if needed and settle leftovers; False while disconnected."""
        if self._sub is None:
            await self._subscribe()
        await self._return_leftovers()  # arrived after the previous request ended
        if self._nc.is_closed:
            raise ConnectionClosedError
        return self._nc.is_connected

    def _ends(self, status: str, msg: Msg) -> bool:
        """True when the status reply ``msg`` ends the request (heartbeats do not)."""
        if status == _HEARTBEAT:
            return False
        self.last_end = status
        if status not in ("404", "408"):
            desc = msg.headers.get("Description", "") if msg.headers else ""
            log.debug("pull request on %s ended: %s %s", self._subject, status, desc)
        return True

    async def pull(self, batch: int, expires: float) -> AsyncGenerator[Msg]:
        """Ask for up to ``batch`` messages, yielding each as soon as it arrives.

        Ends when ``batch`` messages came, the server ends the request (a status
        reply such as 408 at expiry), the connection drops, or the client stops
        waiting. Sends nothing while disconnected: nats-py would buffer the request
        and send it on reconnect, long after this call gave up on it.
        """
        if not await self._ready():
            self.last_end = DISCONNECTED
            return
        reply = self._reply = f"{self._prefix}{next(self._numbers)}"
        self._room = batch
        try:
            request = {"batch": batch, "expires": int(expires * 1e9)}
            await self._nc.publish(self._subject, json.dumps(request).encode(), reply=reply)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + expires + _GRACE
            received = 0
            self.last_end = "full"
            while received < batch:
                try:
                    # What already arrived is taken without a wait (no timer, no task), so
                    # a burst is handed out in one loop iteration and its acks leave together.
                    if self._inbox.empty():
                        msg = await asyncio.wait_for(self._inbox.get(), deadline - loop.time())
                    else:
                        msg = self._inbox.get_nowait()
                except TimeoutError:
                    # No end-of-request reply: the request may outlive us on the server.
                    log.debug("pull request on %s got no reply; giving it up", self._subject)
                    self.last_end = "timeout"
                    return
                if msg is None:
                    self.last_end = DISCONNECTED
                    return
                status = msg.headers.get(_STATUS) if msg.headers else None
                if status is None and not msg.reply:
                    continue  # not a JetStream delivery; nothing to settle
                if status is None:
                    received += 1
                    yield msg
                elif self._ends(status, msg):
                    return
        finally:
            if self._reply == reply:
                self._reply, self._room = "", 0  # what still comes for it is NAKed
