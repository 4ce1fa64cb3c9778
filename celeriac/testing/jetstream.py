"""The JetStream API on the in-memory server: what Celeriac calls on nats-py's context.

Streams, consumers and key-value buckets are declared, read and written here with
nats-py's own config and info classes and its errors, so the SDK's declarer, the
result and revocation stores, the worker's dead-lettering and the dead-letter API
(``celeriac.dlq``) run unchanged. A pull subscription reads a snapshot of the
stream (what the worker's copy of the revocations loads); the memory worker takes
its deliveries from the server directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from nats.js.api import (
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    KeyValueConfig,
    PubAck,
    RawStreamMsg,
    StreamConfig,
    StreamInfo,
)
from nats.js.errors import BucketNotFoundError, NotFoundError

from celeriac.testing.keyvalue import MemoryKeyValue
from celeriac.testing.streams import StoredMessage, stream_config, subject_matches

if TYPE_CHECKING:
    from celeriac.testing.server import MemoryNats


@dataclass(frozen=True)
class PulledMessage:
    """A message fetched from a pull subscription (nats-py's ``Msg`` fields in use)."""

    subject: str
    data: bytes
    headers: dict[str, str] | None
    metadata: Any


class MemoryPullSubscription:
    """An ephemeral pull subscription over what a stream held when it was made."""

    def __init__(self, messages: list[StoredMessage]) -> None:
        self._left = messages

    async def fetch(self, batch: int = 1, timeout: float | None = 5, **_: Any) -> list[Any]:  # noqa: ASYNC109
        """Up to ``batch`` messages; an empty list once all were fetched."""
        taken, self._left = self._left[:batch], self._left[batch:]
        pending = len(self._left)
        return [
            PulledMessage(
                m.subject,
                m.data,
                dict(m.headers) or None,
                SimpleNamespace(num_pending=pending + len(taken) - 1 - i, sequence=m.seq),
            )
            for i, m in enumerate(taken)
        ]

    async def unsubscribe(self) -> None:
        """Nothing to release."""


class MemoryJetStream:
    """A JetStream context on ``server``."""

    def __init__(self, server: MemoryNats) -> None:
        self._server = server

    # Streams ----------------------------------------------------------------------------------

    async def stream_info(self, name: str, subjects_filter: str | None = None) -> StreamInfo:
        """The stream's info; ``NotFoundError`` when it does not exist."""
        with self._server.lock:
            return self._server.stream(name).info(subjects_filter)

    async def streams_info(self, offset: int = 0) -> list[StreamInfo]:
        """Every stream's info, from ``offset``."""
        with self._server.lock:
            return [s.info() for s in self._server.streams()[offset:]]

    async def add_stream(self, config: StreamConfig | None = None, **params: Any) -> StreamInfo:
        """Create a stream (the same configuration again is no error)."""
        stream = self._server.add_stream(stream_config(config, params))
        with self._server.lock:
            return stream.info()

    async def delete_stream(self, name: str) -> bool:
        """Remove a stream."""
        self._server.delete_stream(name)
        return True

    async def purge_stream(
        self, name: str, seq: int | None = None, subject: str | None = None, keep: int | None = None
    ) -> bool:
        """Remove a stream's messages (those on ``subject``, when given)."""
        with self._server.lock:
            self._server.stream(name).purge(subject)
        return True

    async def get_msg(self, stream_name: str, seq: int | None = None, **_: Any) -> RawStreamMsg:
        """Message ``seq`` of the stream; ``NotFoundError`` when it is not there."""
        with self._server.lock:
            message = self._server.stream(stream_name).messages.get(seq or 0)
        if message is None:
            raise NotFoundError(code=404, err_code=10037, description="no message found")
        return RawStreamMsg(
            subject=message.subject,
            seq=message.seq,
            data=message.data,
            headers=dict(message.headers),
            stream=stream_name,
            time=message.time,
        )

    async def get_last_msg(self, stream_name: str, subject: str, **_: Any) -> RawStreamMsg:
        """The newest message on ``subject``; ``NotFoundError`` when there is none."""
        with self._server.lock:
            message = self._server.stream(stream_name).last_on(subject)
        if message is None:
            raise NotFoundError(code=404, err_code=10037, description="no message found")
        return await self.get_msg(stream_name, message.seq)

    async def delete_msg(self, stream_name: str, seq: int) -> bool:
        """Remove message ``seq`` from the stream."""
        with self._server.lock:
            self._server.stream(stream_name).delete(seq)
        return True

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float | None = None,  # noqa: ASYNC109 - nats-py's signature
        stream: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> PubAck:
        """Store a message; raises as ``js.publish`` does when no stream takes it."""
        stored = self._server.publish_stream(subject, payload, dict(headers or {}))
        await self._server.enqueued(stored)
        return PubAck(stream=stored.stream, seq=stored.seq, duplicate=stored.duplicate or None)

    # Consumers --------------------------------------------------------------------------------

    async def add_consumer(
        self, stream: str, config: ConsumerConfig | None = None, **params: Any
    ) -> ConsumerInfo:
        """Add a durable consumer (kept as it is when it exists)."""
        config = config or ConsumerConfig(**params)
        name = self._server.add_consumer(stream, config)
        with self._server.lock:
            return self._server.stream(stream).consumer_info(name)

    async def consumer_info(self, stream: str, consumer: str, **_: Any) -> ConsumerInfo:
        """The consumer's info; ``NotFoundError`` when the stream or consumer is missing."""
        with self._server.lock:
            return self._server.stream(stream).consumer_info(consumer)

    async def pull_subscribe(
        self,
        subject: str,
        durable: str | None = None,
        stream: str | None = None,
        config: ConsumerConfig | None = None,
        **_: Any,
    ) -> MemoryPullSubscription:
        """A snapshot of ``stream`` on ``subject``: every message, or the last of each
        subject with ``DeliverPolicy.LAST_PER_SUBJECT``."""
        if stream is None:
            raise ValueError("the in-memory JetStream needs stream= for a pull subscription")
        with self._server.lock:
            held = self._server.stream(stream).messages.values()
            messages = [m for m in held if subject_matches(subject, m.subject)]
        if config is not None and config.deliver_policy == DeliverPolicy.LAST_PER_SUBJECT:
            last = {m.subject: m for m in messages}
            messages = sorted(last.values(), key=lambda m: m.seq)
        return MemoryPullSubscription(messages)

    # Key-value buckets ------------------------------------------------------------------------

    async def key_value(self, bucket: str) -> MemoryKeyValue:
        """The bucket; ``BucketNotFoundError`` when it does not exist."""
        try:
            self._server.stream(f"KV_{bucket}")
        except NotFoundError:
            raise BucketNotFoundError(code=404, description="bucket not found") from None
        return MemoryKeyValue(self._server, bucket)

    async def create_key_value(
        self, config: KeyValueConfig | None = None, **params: Any
    ) -> MemoryKeyValue:
        """Create a bucket: a stream keeping ``history`` messages per key."""
        config = config or KeyValueConfig(**params)
        self._server.add_stream(
            StreamConfig(
                name=f"KV_{config.bucket}",
                subjects=[f"$KV.{config.bucket}.>"],
                max_msgs_per_subject=config.history,
                max_age=config.ttl,
                allow_rollup_hdrs=True,
                deny_delete=True,
            )
        )
        return MemoryKeyValue(self._server, config.bucket)
