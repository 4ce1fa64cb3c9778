"""The JetStream side shared by the raw ceiling and Celeriac: one queue's stream and consumer.

Both use the protocol's builders, so the raw ceiling runs on exactly the stream
and consumer settings Celeriac declares.
"""

from __future__ import annotations

import contextlib
import time

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, StreamConfig
from nats.js.errors import NotFoundError

from bench.contending import Backlog
from bench.loopthread import LoopThread
from celeriac.protocol import names
from celeriac.protocol.jetstream import QueueSettings, consumer_config, work_stream_config


class QueueAdmin:
    """A NATS connection on its own loop thread that manages one queue's stream."""

    def __init__(self, url: str, queue: str) -> None:
        self.url = url
        self.queue = queue
        self.stream = names.stream_name(queue)
        self.subject = names.task_subject(queue)
        self.loop = LoopThread()
        self.nc: Client = self.loop.run(nats.connect(url))
        self.js: JetStreamContext = self.nc.jetstream()

    def declare(self) -> None:
        """Create the work stream and the durable consumer (Celeriac's defaults)."""
        self.loop.run(self._declare())

    async def _declare(self) -> None:
        settings = QueueSettings()
        stream = StreamConfig(**work_stream_config(self.queue, settings))
        try:
            await self.js.stream_info(self.stream)
        except NotFoundError:
            await self.js.add_stream(stream)
        consumer = ConsumerConfig(**consumer_config(self.queue, settings))
        await self.js.add_consumer(self.stream, consumer)

    def backlog(self) -> Backlog:
        """Pending (undelivered) and pending + unacknowledged messages of the consumer."""
        info = self.loop.run(self.js.consumer_info(self.stream, names.CONSUMER_NAME))
        pending = int(info.num_pending or 0)
        return Backlog(undelivered=pending, unfinished=pending + int(info.num_ack_pending or 0))

    def waiting_pulls(self) -> int:
        """Pull requests waiting on the consumer (one or more per idle worker)."""
        info = self.loop.run(self.js.consumer_info(self.stream, names.CONSUMER_NAME))
        return int(info.num_waiting or 0)

    def wait_waiting(self, count: int, timeout: float) -> None:
        """Block until ``count`` pull requests wait on the consumer."""
        deadline = time.monotonic() + timeout
        while self._safe_waiting() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} workers pulling on {self.stream}")
            time.sleep(0.05)

    def _safe_waiting(self) -> int:
        try:
            return self.waiting_pulls()
        except NotFoundError:
            return 0

    def purge(self, *streams: str) -> None:
        """Purge the work stream and any other named streams that exist."""
        for stream in (self.stream, *streams):
            with contextlib.suppress(NotFoundError):
                self.loop.run(self.js.purge_stream(stream))

    def close(self) -> None:
        """Close the connection and the loop thread."""
        self.loop.run(self.nc.close())
        self.loop.close()
