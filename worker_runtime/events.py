"""Task events, published by a worker started with ``--events`` (off by default).

The handler calls one method per step of a task (received, started, succeeded,
failed, retried, revoked, dead-lettered); each queues a small JSON document
(:class:`celeriac.protocol.events.TaskEvent`) that is published with core NATS on
the next turn of the event loop, never waiting for JetStream to acknowledge it.
Events are a view of the work, so they never get in its way: while NATS is
disconnected they are dropped (they would fill the buffer the task's own results
need), a failed publish is counted and logged at most once a minute, and nothing
here ever raises into the handler.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from nats.js.errors import NotFoundError

from celeriac.protocol import names
from celeriac.protocol.envelope import DeadLetterReason, TaskMessage
from celeriac.protocol.events import EventType, clip_error
from celeriac.worker_runtime.decoding import Rejection

if TYPE_CHECKING:
    from nats.aio.client import Client

    from celeriac.broker import Broker
    from celeriac.worker_runtime.delivery import Delivery
    from celeriac.worker_runtime.metrics import Count

log = logging.getLogger(__name__)

# Seconds between two log lines about events that could not be published.
LOG_EVERY = 60.0
# The event types as their wire strings (an enum member's .value is slow to read).
_RECEIVED = EventType.RECEIVED.value
_STARTED = EventType.STARTED.value
_SUCCEEDED = EventType.SUCCEEDED.value
_FAILED = EventType.FAILED.value
_RETRIED = EventType.RETRIED.value
_REVOKED = EventType.REVOKED.value
_DEAD_LETTERED = EventType.DEAD_LETTERED.value
# Events waiting for the sender at most; beyond, new ones are dropped.
_QUEUED_MAX = 10_000
# Distinct task names whose JSON is kept encoded (a worker has a few dozen).
_NAMES_KEPT = 1024


def rfc3339(moment: datetime) -> str:
    """A UTC time as the wire writes it: ``2026-01-02T03:04:05.123456Z``."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


class TaskEvents:
    """Publishes the events of one worker's tasks; cheap, and never raises.

    A step only writes its document and queues it; a sender publishes what queued up
    in one go on the next turn of the event loop, so a busy worker's events cost the
    handler no ``await`` and the connection one write for many events.
    """

    def __init__(self, nc: Client, worker: str, dropped: Count) -> None:
        self._nc = nc
        self._writer = _Writer(worker)
        self.dropped = dropped
        self._unlogged = 0
        self._last_logged = float("-inf")
        # When each running attempt began (monotonic), for the run time of a failure.
        self._began: weakref.WeakKeyDictionary[Delivery, float] = weakref.WeakKeyDictionary()
        self._queued: list[tuple[str, bytes]] = []
        self._sender: asyncio.Task[None] | None = None

    def received(self, delivery: Delivery, source: TaskMessage | Rejection) -> None:
        """The worker took the message from its queue."""
        self._emit(_RECEIVED, delivery, source, None)

    def started(self, delivery: Delivery, message: TaskMessage) -> None:
        """The attempt begins to run."""
        self._began[delivery] = time.monotonic()
        self._emit(_STARTED, delivery, message, None)

    def succeeded(self, delivery: Delivery, message: TaskMessage, runtime: float) -> None:
        """The task returned and its outcome is settled."""
        self._emit(_SUCCEEDED, delivery, message, {"runtime": runtime})

    def failed(self, delivery: Delivery, message: TaskMessage, error_type: str, error: str) -> None:
        """The task failed for good: no retry is left."""
        extra = {"runtime": self._runtime(delivery), "error_type": error_type, "error": error}
        self._emit(_FAILED, delivery, message, extra)

    def retried(
        self, delivery: Delivery, message: TaskMessage, error_type: str, error: str, delay: float
    ) -> None:
        """The attempt failed and runs again in ``delay`` seconds."""
        extra = {
            "runtime": self._runtime(delivery), "error_type": error_type, "error": error,
            "eta": rfc3339(datetime.now(UTC) + timedelta(seconds=delay)),
        }  # fmt: skip
        self._emit(_RETRIED, delivery, message, extra)

    def revoked(self, delivery: Delivery, message: TaskMessage, reason: str) -> None:
        """The task was skipped: revoked or expired."""
        self._emit(_REVOKED, delivery, message, {"error": reason})

    def dead_lettered(
        self,
        delivery: Delivery,
        source: TaskMessage | Rejection,
        reason: DeadLetterReason,
        error: str,
    ) -> None:
        """The message went to its queue's dead-letter stream (``error_type``: why)."""
        extra = {"error_type": reason.value, "error": error}
        self._emit(_DEAD_LETTERED, delivery, source, extra)

    async def close(self) -> None:
        """Publish what is still queued (the worker is stopping)."""
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)

    def _runtime(self, delivery: Delivery) -> float | None:
        began = self._began.pop(delivery, None)
        return None if began is None else round(time.monotonic() - began, 6)

    def _emit(
        self,
        kind: str,
        delivery: Delivery,
        source: TaskMessage | Rejection,
        extra: dict[str, Any] | None,
    ) -> None:
        try:
            if not self._nc.is_connected:
                # Buffered events would crowd out the results waiting for the reconnect.
                raise ConnectionError("not connected to NATS")
            if len(self._queued) >= _QUEUED_MAX:
                raise BufferError(f"{_QUEUED_MAX} events waiting to be published")
            document = self._writer.document(kind, delivery, source, extra)
            self._queued.append((f"celeriac.events.{delivery.queue}.{kind}", document))
            if self._sender is None:
                self._sender = asyncio.ensure_future(self._send())
        except Exception as exc:  # never let an event fail the task
            self._dropped(exc)

    async def _send(self) -> None:
        """Publish everything queued, then end (the next event starts another sender)."""
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                for subject, document in batch:
                    try:
                        await self._nc.publish(subject, document)
                    except Exception as exc:
                        self._dropped(exc)
        finally:
            self._sender = None

    def _dropped(self, exc: Exception) -> None:
        self.dropped.inc()
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last_logged >= LOG_EVERY:
            log.warning(
                "%d task event(s) not published (%r); events are dropped, tasks go on",
                self._unlogged, exc,
            )  # fmt: skip
            self._unlogged = 0
            self._last_logged = now


class _Writer:
    """Writes event documents as compact JSON, fast: the pieces that repeat (the worker,
    task names, the current second) are encoded once. Task ids and queue names are
    validated on the way in and hold no character JSON would escape."""

    def __init__(self, worker: str) -> None:
        self._worker = json.dumps(worker)
        self._names: dict[str | None, str] = {}
        self._second = -1
        self._second_text = ""

    def now(self) -> str:
        """The current UTC time, as the wire writes it (``...T03:04:05.123456Z``)."""
        moment = time.time()
        second = int(moment)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((moment - second) * 1e6):06d}Z"

    def _name(self, task: str | None) -> str:
        encoded = self._names.get(task)
        if encoded is None:
            if len(self._names) >= _NAMES_KEPT:
                self._names.clear()
            encoded = self._names[task] = json.dumps(task)
        return encoded

    def document(
        self,
        kind: str,
        delivery: Delivery,
        source: TaskMessage | Rejection,
        extra: dict[str, Any] | None,
    ) -> bytes:
        """The event (a :class:`TaskEvent`) as JSON bytes; ``extra``'s None values left out."""
        if isinstance(source, TaskMessage):
            task_id = f'"{source.id}"'
            retries = source.retries + delivery.deliveries - 1
        else:
            task_id, retries = json.dumps(source.task_id), delivery.deliveries - 1
        text = (
            f'{{"v":1,"type":"{kind}","time":"{self.now()}","task_id":{task_id},'
            f'"task":{self._name(source.task)},"queue":"{delivery.queue}",'
            f'"worker":{self._worker},"retries":{max(0, retries)}'
        )
        for key, value in (extra or {}).items():
            if isinstance(value, float):  # a run time: finite, and repr is JSON
                text += f',"{key}":{value!r}'
            elif value is not None:
                text += f',"{key}":{json.dumps(clip_error(value) if key == "error" else value)}'
        return (text + "}").encode()


async def open_events(broker: Broker, worker: str, dropped: Count) -> TaskEvents:
    """The worker's event publisher, once the events stream is there to keep them.

    Declaring queues (no operator), a missing stream is created with the default
    limits; under the operator it is the operator's, and until it exists events are
    published to no one, which the log says once.
    """
    try:
        created = await broker.declarer.events_stream()
    except NotFoundError:
        log.warning(
            "events are on but stream %s does not exist: the operator creates it; "
            "until then events are lost",
            names.EVENTS_STREAM,
        )
    except Exception as exc:  # events must not keep the worker from running tasks
        log.warning("could not check the events stream %s (%r)", names.EVENTS_STREAM, exc)
    else:
        if created:
            log.info("created the events stream %s", names.EVENTS_STREAM)
    log.info("publishing task events on celeriac.events.<queue>.<type>")
    return TaskEvents(broker.nc, worker, dropped)
