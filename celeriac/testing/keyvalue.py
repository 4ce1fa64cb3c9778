"""A JetStream key-value bucket held by the in-memory server.

What Celeriac uses of nats-py's ``KeyValue``, with its errors: a bucket is the stream
``KV_<bucket>`` keeping the last message of each ``$KV.<bucket>.<key>``, so the
results a worker writes through a plain publish and the ones read here are the
same messages. ``create`` and ``update`` are conditional publishes the stream
checks, as on a nats-server; ``watch`` hands out the current value, then a None
marker, then every later write.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from celeriac.testing.streams import (
    ERR_WRONG_LAST_SEQUENCE,
    HDR_EXPECTED_LAST_SUBJECT_SEQUENCE,
    StoredMessage,
)

if TYPE_CHECKING:
    from celeriac.testing.server import CoreMessage, MemoryNats

_OPERATION = "KV-Operation"


def _entry(bucket: str, key: str, value: bytes, revision: int | None, op: str | None) -> Any:
    return KeyValue.Entry(
        bucket=bucket, key=key, value=value, revision=revision, delta=0, created=None,
        operation=op,
    )  # fmt: skip


class MemoryKeyValue:
    """The bucket ``bucket`` on ``server``."""

    def __init__(self, server: MemoryNats, bucket: str) -> None:
        self._server = server
        self.bucket = bucket
        self.stream = f"KV_{bucket}"
        self._prefix = f"$KV.{bucket}."

    def _last(self, key: str) -> StoredMessage | None:
        with self._server.lock:
            return self._server.stream(self.stream).last_on(self._prefix + key)

    async def get(self, key: str, revision: int | None = None) -> Any:
        """The entry of ``key``; ``KeyNotFoundError`` when missing or deleted."""
        message = self._last(key)
        if message is None or (revision is not None and message.seq != revision):
            raise KeyNotFoundError()
        op = message.headers.get(_OPERATION)
        if op is not None:
            raise KeyNotFoundError(op=op)
        return _entry(self.bucket, key, message.data, message.seq, None)

    async def put(self, key: str, value: bytes) -> int:
        """Store ``value`` under ``key``; its revision."""
        return await self._publish(key, value, {})

    async def create(self, key: str, value: bytes) -> int:
        """Store ``value`` only if ``key`` holds nothing (or was deleted)."""
        try:
            return await self.update(key, value, last=0)
        except KeyWrongLastSequenceError:
            message = self._last(key)
            if message is None or message.headers.get(_OPERATION) is None:
                raise
            return await self.update(key, value, last=message.seq)

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        """Store ``value`` only if the last revision of ``key`` is ``last``."""
        headers = {HDR_EXPECTED_LAST_SUBJECT_SEQUENCE: str(last or 0)}
        try:
            return await self._publish(key, value, headers)
        except APIError as exc:
            if exc.err_code == ERR_WRONG_LAST_SEQUENCE:
                raise KeyWrongLastSequenceError(description=exc.description) from None
            raise

    async def delete(self, key: str, last: int | None = None) -> bool:
        """Mark ``key`` deleted."""
        headers = {_OPERATION: "DEL"}
        if last:
            headers[HDR_EXPECTED_LAST_SUBJECT_SEQUENCE] = str(last)
        await self._publish(key, b"", headers)
        return True

    async def keys(self) -> list[str]:
        """Every key holding a value; ``NoKeysError`` when there is none."""
        found: dict[str, bool] = {}
        with self._server.lock:
            for message in self._server.stream(self.stream).messages.values():
                found[message.subject[len(self._prefix) :]] = _OPERATION not in message.headers
        keys = [key for key, alive in found.items() if alive]
        if not keys:
            raise NoKeysError()
        return keys

    async def watch(self, keys: str, **_: Any) -> MemoryWatcher:
        """Follow ``keys`` (a key or a wildcard): the current values, None, then updates."""
        watcher = MemoryWatcher(self._server)
        watcher.sid, current = self._server.watch(
            self.stream, self._prefix + keys, watcher.on_write
        )
        for message in current:
            watcher.updates.put_nowait(self._from_stored(message))
        watcher.updates.put_nowait(None)
        return watcher

    def _from_stored(self, message: StoredMessage) -> Any:
        key = message.subject[len(self._prefix) :]
        return _entry(self.bucket, key, message.data, message.seq,
                      message.headers.get(_OPERATION))  # fmt: skip

    async def _publish(self, key: str, value: bytes, headers: dict[str, str]) -> int:
        stored = self._server.publish_stream(self._prefix + key, value, headers)
        return stored.seq


class MemoryWatcher:
    """Entries of a watch, in order; iterate it, or call ``updates``."""

    def __init__(self, server: MemoryNats) -> None:
        self._server = server
        self.updates: asyncio.Queue[Any] = asyncio.Queue()
        self.sid: int | None = None

    async def on_write(self, message: CoreMessage) -> None:
        """A write on a watched key (a subscription callback)."""
        _, bucket, key = message.subject.split(".", 2)
        headers = message.headers or {}
        op = headers.get(_OPERATION)
        self.updates.put_nowait(_entry(bucket, key, message.data, message.seq, op))

    def __aiter__(self) -> MemoryWatcher:
        return self

    async def __anext__(self) -> Any:
        return await self.updates.get()

    async def stop(self) -> None:
        """Stop following the keys."""
        if self.sid is not None:
            self._server.unsubscribe(self.sid)
            self.sid = None
