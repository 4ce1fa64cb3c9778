"""The worker's copy of the revoked task ids, so checking a task costs no round trip.

Revocations stay durable in the KV bucket ``celeriac_revoked``. A revoke is a KV
put on ``$KV.celeriac_revoked.<id>``: the worker follows those subjects with a
plain subscription, then loads what the bucket holds, so nothing written between
the two is missed. A reconnect may have missed writes, so after one the copy is
stale and lookups ask the server until a reload has finished. The copy is
reloaded now and then, so ids whose revocation expired on the server drop out.

A write with the ``Celeriac-Terminate`` header (``revoke(terminate=True)``) is also
handed to ``on_terminate``, which stops the task if this worker runs it.

As with any broadcast revoke, a revoke issued a few milliseconds before a worker
takes the task may come too late for that worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from celeriac.protocol import names
from celeriac.revocation import RevocationStore

log = logging.getLogger(__name__)

_OPERATION = "KV-Operation"  # set on deletes and purges, absent on puts
_LOAD_TIMEOUT = 10.0
_FETCH_BATCH = 1000
# A failed load is tried again on a lookup at most this often.
_RETRY_AFTER = 1.0
# Reload the whole copy this often, to forget revocations the server let expire.
RELOAD_EVERY = 3600.0


class RevokedMirror:
    """Revoked ids and their reasons, kept current from the bucket's writes."""

    def __init__(self, nc: Client, store: RevocationStore) -> None:
        self._nc = nc
        self._store = store
        self._subject_prefix = names.kv_subject(names.REVOKED_BUCKET, "")
        self._reasons: dict[str, str] = {}
        # Writes seen while a load runs; applied over the loaded copy.
        self._during_load: dict[str, str | None] | None = None
        self._sub: Subscription | None = None
        self._loaded_epoch: int | None = None  # the reconnect count the copy is current for
        self._loaded_at = 0.0
        self._last_attempt = -_RETRY_AFTER
        self._loading: asyncio.Task[None] | None = None
        # Called with (task id, signal name, reason) for a revoke that also asks to stop
        # the task if it runs (revoke(terminate=True)): live writes, and after each load.
        self.on_terminate: Callable[[str, str, str], None] | None = None

    @property
    def current(self) -> bool:
        """True when lookups can be answered from memory."""
        return self._sub is not None and self._loaded_epoch == self._nc.stats["reconnects"]

    async def start(self) -> None:
        """Follow the bucket and load it; on failure lookups ask the server until a retry works."""
        try:
            await self._store.kv()  # the bucket exists before anything subscribes to it
            self._sub = await self._nc.subscribe(
                names.kv_subjects(names.REVOKED_BUCKET), cb=self._on_write
            )
        except Exception as exc:
            log.warning("revocations are checked on the server for each task: %s", exc)
            return
        await self._load_once()

    async def reason(self, task_id: str) -> str | None:
        """Why ``task_id`` was revoked, or None when it is not."""
        if self._sub is not None:
            now = asyncio.get_running_loop().time()
            if not self.current or now - self._loaded_at >= RELOAD_EVERY:
                self._reload_soon(now)
        if self.current:
            return self._reasons.get(task_id)
        return await self._store.reason(task_id)

    async def stop(self) -> None:
        """Stop following the bucket."""
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loading
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):  # a closed connection has nothing to drop
                await sub.unsubscribe()

    def _reload_soon(self, now: float) -> None:
        if self._loading is not None and not self._loading.done():
            return
        if now - self._last_attempt < _RETRY_AFTER:
            return
        self._loading = asyncio.create_task(self._load_once(), name="celeriac-revoked-load")

    async def _on_write(self, msg: Msg) -> None:
        task_id = msg.subject[len(self._subject_prefix) :]
        removed = bool(msg.headers and msg.headers.get(_OPERATION))
        reason = None if removed else (msg.data or b"revoked").decode(errors="replace")
        if self._during_load is not None:
            self._during_load[task_id] = reason
        self._apply(self._reasons, task_id, reason)
        if reason is not None:
            self._terminate(task_id, msg.headers, reason)

    def _terminate(self, task_id: str, headers: dict[str, str] | None, reason: str) -> None:
        signal_name = headers.get(names.HDR_TERMINATE) if headers else None
        if not signal_name or self.on_terminate is None:
            return
        try:
            self.on_terminate(task_id, signal_name, reason)
        except Exception:
            log.exception("could not terminate %s", task_id)

    @staticmethod
    def _apply(reasons: dict[str, str], task_id: str, reason: str | None) -> None:
        if reason is None:
            reasons.pop(task_id, None)
        else:
            reasons[task_id] = reason

    async def _load_once(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_attempt = loop.time()
        epoch = self._nc.stats["reconnects"]
        self._during_load = {}
        # Terminate requests in the bucket: one made while disconnected still reaches us.
        terminating: dict[str, dict[str, str]] = {}
        try:
            async with asyncio.timeout(_LOAD_TIMEOUT):
                loaded = await self._read_bucket(terminating)
        except Exception as exc:
            log.warning("could not load the revoked ids (%r); asking the server meanwhile", exc)
            return
        finally:
            seen, self._during_load = self._during_load, None
        for task_id, reason in seen.items():
            self._apply(loaded, task_id, reason)
        self._reasons = loaded
        self._loaded_epoch = epoch
        self._loaded_at = loop.time()
        log.debug("%d revoked id(s) loaded", len(loaded))
        for task_id, headers in terminating.items():
            if task_id in loaded:
                self._terminate(task_id, headers, loaded[task_id])

    async def _read_bucket(self, terminating: dict[str, dict[str, str]]) -> dict[str, str]:
        """The current value of every key, through a short-lived ephemeral consumer; the
        headers of those that ask to terminate go into ``terminating``."""
        js = self._nc.jetstream()
        stream = f"KV_{names.REVOKED_BUCKET}"
        info = await js.stream_info(stream)
        loaded: dict[str, str] = {}
        if not info.state.messages:
            return loaded
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=_LOAD_TIMEOUT,
            mem_storage=True,
        )
        sub = await js.pull_subscribe(
            names.kv_subjects(names.REVOKED_BUCKET), stream=stream, config=config
        )
        try:
            while True:
                batch = await sub.fetch(_FETCH_BATCH, timeout=_LOAD_TIMEOUT)
                for msg in batch:
                    removed = bool(msg.headers and msg.headers.get(_OPERATION))
                    if not removed:
                        task_id = msg.subject[len(self._subject_prefix) :]
                        loaded[task_id] = (msg.data or b"revoked").decode(errors="replace")
                        if msg.headers and msg.headers.get(names.HDR_TERMINATE):
                            terminating[task_id] = msg.headers
                if not batch or batch[-1].metadata.num_pending == 0:
                    return loaded
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
