"""One queue's consume loop: bind to the durable consumer, pull what fits, hand it out.

Binding retries until the queue exists: declared by the worker itself when the
app declares queues, otherwise created by the operator (the worker is not ready
until then). The loop reserves free slots before each pull request, so messages
never wait in the worker behind a long task; after a stop request it sends no
new requests and NAKs what an outstanding request still delivers.
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
from celeriac.worker_runtime.fetching import PullRequester
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

    async def run(self) -> None:
        """Bind, consume, and bind again if the consumer disappears."""
        requester = PullRequester(self._broker.nc, self._stream, names.CONSUMER_NAME)
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
        while not self._stopping.is_set():
            wanted = await self._reserve()
            if wanted == 0:
                return
            started = time.monotonic()
            got = 0
            try:
                async for msg in requester.pull(wanted, PULL_EXPIRES):
                    got += 1
                    delivery = Delivery(msg, self.queue, self._heartbeat, loop.time())
                    if self._stopping.is_set():
                        self._slots.release(1)
                        await delivery.nak_quietly()  # draining: let another worker have it
                    else:
                        self._dispatch(delivery)
            except Exception as exc:  # disconnected, or the connection is closing
                log.warning("pull on queue %r failed: %r", self.queue, exc)
                await self._sleep(1.0)
            finally:
                self._slots.release(wanted - got)
            if got == 0 and not await self._still_bound(requester, started):
                return

    async def _still_bound(self, requester: PullRequester, started: float) -> bool:
        """After an empty pull: False when the consumer is gone (bind again)."""
        if requester.last_end == "408" and time.monotonic() - started > PULL_EXPIRES / 2:
            return True
        try:
            await self._broker.js.consumer_info(self._stream, names.CONSUMER_NAME)
        except NotFoundError:
            log.error("queue %r: consumer %r disappeared", self.queue, names.CONSUMER_NAME)
            self.bound = False
            return False
        except Exception as exc:
            log.warning("queue %r: cannot check the consumer: %r", self.queue, exc)
        # An early end (409, no reply) without a missing consumer: do not spin.
        await self._sleep(0.5)
        return True
