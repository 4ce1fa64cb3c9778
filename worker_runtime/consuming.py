"""One queue's consume loop: bind to the durable consumer, pull what fits, hand it out.

Binding retries until the queue exists: declared by the worker itself when the
app declares queues, otherwise created by the operator (the worker is not ready
until then). The loop reserves free slots before each pull request, so messages
never wait in the worker behind a long task; after a stop request it sends no
new requests and NAKs what an outstanding request still delivers. While NATS is
down it sends nothing and waits for the reconnect; a run of failing pulls logs
its first failure and its recovery, not every attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from nats.js.errors import NotFoundError

from celeriac.protocol import names
from celeriac.worker_runtime.delivery import Delivery
from celeriac.worker_runtime.fetching import DISCONNECTED, PullRequester
from celeriac.worker_runtime.heartbeats import Heartbeats
from celeriac.worker_runtime.slots import SlotPool

if TYPE_CHECKING:
    from celeriac.broker import Broker

log = logging.getLogger(__name__)

# Seconds a pull request waits on the server for messages; also bounds how long a
# stop request waits for an outstanding pull to end.
PULL_EXPIRES = 2.0
_BIND_RETRY_MAX = 5.0
# How long a busy worker waits for a quarter of its slots to free up before pulling.
_LINGER = 0.002
# How often the connection is looked at in the moment nats-py knows it is down but
# has not yet called back (the callback is what wakes the waiters).
_RECHECK = 0.05


class _Trouble:
    """A run of failures of one kind: logs the first and the recovery, the rest at DEBUG.

    Failures while NATS is disconnected are expected: the connection reports the outage.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0
        self.warned = False

    def failed(self, exc: BaseException, *, disconnected: bool) -> None:
        self.failures += 1
        if disconnected or self.warned:
            log.debug("%s failed: %r; retrying", self.what, exc)
        else:
            log.warning("%s failed: %r; retrying", self.what, exc)
            self.warned = True

    def recovered(self) -> None:
        if self.warned:
            log.info("%s works again (after %d failure(s))", self.what, self.failures)
        self.failures, self.warned = 0, False


class QueueConsumer:
    """Consumes ``queue`` until ``stopping`` is set."""

    def __init__(
        self,
        queue: str,
        broker: Broker,
        slots: SlotPool,
        dispatch: Callable[[Delivery], None],
        heartbeats: Heartbeats,
        *,
        declare: bool,
        share: int,
        stopping: asyncio.Event,
    ) -> None:
        self.queue = queue
        self.bound = False
        self._broker = broker
        self._slots = slots
        self._dispatch = dispatch
        self._heartbeats = heartbeats
        self._declare = declare
        self._share = share
        self._stopping = stopping
        self._stream = names.stream_name(queue)
        self._heartbeat = 10.0
        self._pull_trouble = _Trouble(f"pulling from queue {queue!r}")
        self._check_trouble = _Trouble(f"checking the consumer of queue {queue!r}")

    async def run(self) -> None:
        """Bind, consume, and bind again if the consumer disappears."""
        requester = PullRequester(
            self._broker.nc, self._stream, names.CONSUMER_NAME, self._broker.connection
        )
        try:
            while not self._stopping.is_set():
                await self._bind()
                if self.bound:
                    await self._consume(requester)
        finally:
            self.bound = False
            await requester.close()

    async def _bind(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                if self._declare:
                    await self._broker.ensure_queue(self.queue)
                info = await self._broker.js.consumer_info(self._stream, names.CONSUMER_NAME)
            except NotFoundError:
                log.error(
                    "queue %r is not ready: stream %s or its consumer %r does not exist and this "
                    "worker does not declare queues; create it (TaskQueue resource) - retrying",
                    self.queue, self._stream, names.CONSUMER_NAME,
                )  # fmt: skip
            except Exception as exc:
                log.error("queue %r is not ready: %s - retrying", self.queue, exc)
            else:
                ack_wait = float(info.config.ack_wait or 30.0)
                # A third of ack_wait: two heartbeats may be lost before a redelivery.
                self._heartbeat = max(0.1, ack_wait / 3)
                self._heartbeats.note_interval(self._heartbeat)
                self.bound = True
                log.info("consuming queue %r (ack_wait %gs)", self.queue, ack_wait)
                return
            await self._sleep(delay)
            delay = min(_BIND_RETRY_MAX, delay * 2)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _connected(self) -> bool:
        """Wait until NATS is connected; False when a stop request came first."""
        nc, connection = self._broker.nc, self._broker.connection
        while not (nc.is_connected or nc.is_closed or self._stopping.is_set()):
            if connection.connected:
                await self._sleep(_RECHECK)  # the disconnect callback is still to come
                continue
            up = asyncio.ensure_future(connection.wait_connected())
            stop = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({up, stop}, return_when=asyncio.FIRST_COMPLETED)
            up.cancel()
            stop.cancel()
        return not self._stopping.is_set()

    async def _reserve(self) -> int:
        """Free slots to ask for; 0 when a stop request came first."""
        gather = max(1, self._share // 4)
        reserve = asyncio.ensure_future(
            self._slots.reserve(self._share, gather=gather, linger=_LINGER)
        )
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({reserve, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if reserve.done():
            taken = reserve.result()
            if self._stopping.is_set():
                self._slots.release(taken)
                return 0
            return taken
        reserve.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            taken = await reserve  # it may have completed while being cancelled
            self._slots.release(taken)
        return 0

    async def _consume(self, requester: PullRequester) -> None:
        loop = asyncio.get_running_loop()
        while await self._connected():
            wanted = await self._reserve()
            if wanted == 0:
                return
            started = time.monotonic()
            got = 0
            try:
                async with contextlib.aclosing(requester.pull(wanted, PULL_EXPIRES)) as msgs:
                    async for msg in msgs:
                        got += 1
                        delivery = Delivery(msg, self.queue, self._heartbeat, loop.time())
                        if self._stopping.is_set():
                            self._slots.release(1)
                            await delivery.nak_quietly()  # draining: let another worker have it
                        else:
                            self._dispatch(delivery)
            except Exception as exc:  # e.g. the connection is closing
                self._pull_trouble.failed(exc, disconnected=not self._broker.nc.is_connected)
                await self._sleep(1.0)
            else:
                if requester.last_end != DISCONNECTED:
                    self._pull_trouble.recovered()
            finally:
                self._slots.release(wanted - got)
            if got == 0 and not await self._still_bound(requester, started):
                return

    async def _still_bound(self, requester: PullRequester, started: float) -> bool:
        """After an empty pull: False when the consumer is gone (bind again)."""
        if requester.last_end == DISCONNECTED:
            return True  # the loop waits for the reconnect
        if requester.last_end == "408" and time.monotonic() - started > PULL_EXPIRES / 2:
            return True
        # An early end (409, no reply): do not spin. A 409 also comes from a server
        # shutting down; by then the connection has dropped and there is nothing to check.
        await self._sleep(0.5)
        if not self._broker.nc.is_connected:
            return True
        try:
            await self._broker.js.consumer_info(self._stream, names.CONSUMER_NAME)
        except NotFoundError:
            log.error("queue %r: consumer %r disappeared", self.queue, names.CONSUMER_NAME)
            self.bound = False
            return False
        except Exception as exc:
            self._check_trouble.failed(exc, disconnected=not self._broker.nc.is_connected)
        else:
            self._check_trouble.recovered()
        return True
