"""Durable revocation: revoked task ids live in the KV bucket ``celeriac_revoked``.

Every worker checks the bucket before running a task, so a revocation reaches
workers started later and survives restarts, unlike a per-worker memory list.
"""

from __future__ import annotations

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from celeriac.declaring import Declarer
from celeriac.protocol import jetstream, names


class RevocationStore:
    """Store and look up revoked task ids; the bucket is opened on first use."""

    def __init__(self, declarer: Declarer, ttl: float = jetstream.REVOKED_TTL_SECONDS) -> None:
        self._declarer = declarer
        self._ttl = ttl
        self._kv: KeyValue | None = None

    async def kv(self) -> KeyValue:
        """The revocations bucket."""
        if self._kv is None:
            self._kv = await self._declarer.bucket(names.REVOKED_BUCKET, ttl=self._ttl)
        return self._kv

    async def revoke(self, task_id: str, reason: str = "revoked") -> None:
        """Mark ``task_id`` revoked; workers skip it from now on."""
        kv = await self.kv()
        await kv.put(task_id, reason.encode())

    async def reason(self, task_id: str) -> str | None:
        """Why ``task_id`` was revoked, or None when it is not."""
        kv = await self.kv()
        try:
            entry = await kv.get(task_id)
        except KeyNotFoundError:
            return None
        return (entry.value or b"revoked").decode(errors="replace")
