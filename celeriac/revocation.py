"""Durable revocation: revoked task ids live in the KV bucket ``celeriac_revoked``.

Every worker checks the bucket before running a task, so a revocation reaches
workers started later and survives restarts, unlike a per-worker memory list.
A revocation that also asks to stop the task if it runs carries the
``Celeriac-Terminate`` header naming the signal; the stored value stays the reason,
so every reader of the bucket sees an ordinary revocation.
"""

from __future__ import annotations

import re
import signal as signals

from nats.js.errors import InvalidKeyError, KeyNotFoundError
from nats.js.kv import KeyValue

from celeriac.declaring import Declarer
from celeriac.protocol import jetstream, names

# What a KV key may be (the check kv.put makes).
_KEY = re.compile(r"[-/_=.a-zA-Z0-9]+")


def terminate_signal(value: str | int | None) -> str:
    """The signal name a terminating revoke sends: ``SIGTERM`` (default) or ``SIGKILL``.

    Accepts Celery's spellings: ``"SIGKILL"``, ``"KILL"``, ``"kill"``, ``signal.SIGKILL``
    or its number. Anything else raises ``ValueError`` naming the argument.
    """
    if value is None:
        return "SIGTERM"
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            name = signals.Signals(value).name
        except ValueError:
            name = str(value)
    elif isinstance(value, str):
        name = value.strip().upper()
        if not name.startswith("SIG"):
            name = f"SIG{name}"
    else:
        raise ValueError(f"signal must be a signal name or number, not {type(value).__name__}")
    if name not in names.TERMINATE_SIGNALS:
        raise ValueError(
            f"signal={value!r} is not supported: use 'SIGTERM' (the default: a process-pool "
            "child may clean up before it is killed) or 'SIGKILL'"
        )
    return name


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

    async def revoke(
        self, task_id: str, reason: str = "revoked", *, terminate: str | None = None
    ) -> None:
        """Mark ``task_id`` revoked; workers skip it from now on.

        With ``terminate`` (a signal name, see :func:`terminate_signal`) a worker
        running the task also stops it.
        """
        kv = await self.kv()
        if terminate is None:
            await kv.put(task_id, reason.encode())
            return
        if not _KEY.fullmatch(task_id) or task_id.startswith(".") or task_id.endswith("."):
            raise InvalidKeyError(task_id)
        # A KV put with a header: what kv.put publishes, plus the signal.
        subject = names.kv_subject(names.REVOKED_BUCKET, task_id)
        headers = {names.HDR_TERMINATE: terminate_signal(terminate)}
        await self._declarer.js.publish(subject, reason.encode(), headers=headers)

    async def reason(self, task_id: str) -> str | None:
        """Why ``task_id`` was revoked, or None when it is not."""
        kv = await self.kv()
        try:
            entry = await kv.get(task_id)
        except KeyNotFoundError:
            return None
        return (entry.value or b"revoked").decode(errors="replace")
