"""Task states and results in the JetStream KV bucket ``celeriac_results``.

Workers write a ``ResultRecord`` under the task id as the task moves through its
states; callers read it, or watch the key until the state is final. The bucket's
age limit is the result TTL, so results expire on the server without a sweeper.
"""

from __future__ import annotations

import asyncio

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from celeriac.declaring import Declarer
from celeriac.exceptions import ResultTimeoutError
from celeriac.protocol import names
from celeriac.protocol.envelope import ResultRecord
from celeriac.pubacks import PubAcks


class ResultStore:
    """Read, write and wait for result records; the bucket is opened on first use."""

    def __init__(self, declarer: Declarer, ttl: float, pubacks: PubAcks) -> None:
        self._declarer = declarer
        self._ttl = ttl
        self._pubacks = pubacks
        self._kv: KeyValue | None = None

    async def kv(self) -> KeyValue:
        """The results bucket (created with the TTL when missing and declaring is on)."""
        if self._kv is None:
            self._kv = await self._declarer.bucket(names.RESULTS_BUCKET, ttl=self._ttl)
        return self._kv

    async def get(self, task_id: str) -> ResultRecord | None:
        """The current record of ``task_id``, or None when nothing is stored (PENDING)."""
        kv = await self.kv()
        try:
            entry = await kv.get(task_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return ResultRecord.model_validate_json(entry.value)

    async def put(self, task_id: str, record: ResultRecord) -> None:
        """Store ``record`` as the state of ``task_id``, replacing what was there."""
        await self.put_raw(task_id, record.dumps())

    async def put_raw(self, task_id: str, document: bytes) -> None:
        """Store an already serialized ``ResultRecord`` (the worker's hot path)."""
        if self._kv is None:
            await self.kv()  # the bucket must exist before writes to its subjects
        subject = names.kv_subject(names.RESULTS_BUCKET, task_id)
        await self._pubacks.publish(subject, document)

    async def create(self, task_id: str, record: ResultRecord) -> bool:
        """Store ``record`` only if ``task_id`` has no record yet; True when stored."""
        kv = await self.kv()
        try:
            await kv.create(task_id, record.dumps())
        except KeyWrongLastSequenceError:
            return False
        return True

    async def delete(self, task_id: str) -> None:
        """Remove the record of ``task_id`` (``forget()``): it reads as PENDING again.
        The bucket keeps one revision per key, so the delete marker replaces the record.
        Nothing stored is not an error."""
        kv = await self.kv()
        await kv.delete(task_id)

    async def wait(self, task_id: str, timeout: float | None) -> ResultRecord:  # noqa: ASYNC109
        """Watch ``task_id`` until its state is final (SUCCESS, FAILURE, REVOKED).

        Raises ``ResultTimeoutError`` (a ``TimeoutError``) naming the id on timeout.
        """
        kv = await self.kv()
        watcher = await kv.watch(task_id)
        try:
            async with asyncio.timeout(timeout):
                async for entry in watcher:
                    if entry is None or not entry.value or entry.operation is not None:
                        continue
                    record = ResultRecord.model_validate_json(entry.value)
                    if record.state.ready:
                        return record
        except TimeoutError:
            raise ResultTimeoutError(task_id, timeout) from None
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        raise ResultTimeoutError(task_id, timeout)  # the watch ended without a final state
