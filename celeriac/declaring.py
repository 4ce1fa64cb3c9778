"""Create a queue's JetStream objects and the shared KV buckets when they are missing.

On a laptop or in tests there is no operator: like Celery declaring its queues, the
SDK (and the worker) create a missing queue with default settings. Under the
operator ``declare_queues`` is off and a missing queue is an error that says so.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, KeyValueConfig, StreamConfig, StreamInfo
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from celeriac.exceptions import QueueNotFoundError
from celeriac.protocol import jetstream, names


@dataclass(frozen=True)
class QueueInfo:
    """What the SDK needs to know about a declared queue."""

    name: str
    schedules: bool


class Declarer:
    """Declares queues and buckets once per connection; safe against concurrent callers."""

    def __init__(self, js: JetStreamContext, *, declare: bool) -> None:
        self._js = js
        self._declare = declare
        self._queues: dict[str, QueueInfo] = {}
        self._lock = asyncio.Lock()

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context everything is declared through."""
        return self._js

    async def ensure_queue(self, queue: str) -> QueueInfo:
        """The queue's info, creating its streams and consumer first if allowed and missing."""
        known = self._queues.get(queue)
        if known is not None:
            return known
        async with self._lock:
            known = self._queues.get(queue)
            if known is None:
                known = await self._declare_queue(names.check_queue_name(queue))
                self._queues[queue] = known
        return known

    async def _declare_queue(self, queue: str) -> QueueInfo:
        stream = names.stream_name(queue)
        try:
            info = await self._js.stream_info(stream)
        except NotFoundError:
            if not self._declare:
                raise QueueNotFoundError(
                    f"queue {queue!r} does not exist (no stream {stream}) and declaring queues "
                    "is off; create it with a TaskQueue resource or set CELERIAC_DECLARE_QUEUES=1"
                ) from None
            settings = jetstream.QueueSettings()
            info = await self._add_stream(jetstream.work_stream_config(queue, settings))
            await self._add_stream(jetstream.dead_letter_stream_config(queue, settings))
            await self._js.add_consumer(
                stream, ConsumerConfig(**jetstream.consumer_config(queue, settings))
            )
        return QueueInfo(name=queue, schedules=bool(info.config.allow_msg_schedules))

    async def _add_stream(self, config: dict[str, Any]) -> StreamInfo:
        try:
            return await self._js.add_stream(StreamConfig(**config))
        except BadRequestError:
            # Another process created it first (with its own settings): use what exists.
            return await self._js.stream_info(str(config["name"]))

    async def events_stream(self) -> bool:
        """Make sure the task events stream exists; True when this call created it.

        Declaring, it is created with the default limits; otherwise a missing stream
        raises ``NotFoundError`` (the operator creates it with the install's limits).
        """
        try:
            await self._js.stream_info(names.EVENTS_STREAM)
            return False
        except NotFoundError:
            if not self._declare:
                raise
        config = jetstream.events_stream_config(jetstream.EventsSettings())
        try:
            await self._js.add_stream(StreamConfig(**config))
        except BadRequestError:
            return False  # created concurrently by someone else
        return True

    async def bucket(self, name: str, *, ttl: float) -> KeyValue:
        """Open the KV bucket ``name``, creating it with ``ttl`` (seconds, 0 = keep) if allowed."""
        try:
            return await self._js.key_value(name)
        except BucketNotFoundError:
            if not self._declare:
                raise QueueNotFoundError(
                    f"KV bucket {name!r} does not exist and declaring is off; "
                    "the operator creates it"
                ) from None
        try:
            return await self._js.create_key_value(
                KeyValueConfig(bucket=name, ttl=ttl or None, history=1)
            )
        except BadRequestError:
            return await self._js.key_value(name)
