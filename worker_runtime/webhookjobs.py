"""Completion webhooks, the worker's half: a delivery job per settled event.

Publishing the job is part of settling the message: it is awaited before the ack
(or term), and a failure is retried like a failure to store the result, never by
running the task again. The job's id (the ``webhook-id`` the receiver sees) is made
from the task id, the message's stream sequence and the event, so a redelivered
message settles into the same id: JetStream drops the duplicate inside its window,
and a receiver can drop it after.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nats.js.errors import NotFoundError
from pydantic import ValidationError

from celeriac.protocol import names
from celeriac.protocol.envelope import TaskMessage
from celeriac.protocol.states import TaskState
from celeriac.protocol.webhooks import (
    QUEUE_WEBHOOK_KEY,
    WEBHOOKS_STREAM,
    WEBHOOKS_SUBJECTS,
    WebhookEvent,
    WebhookJob,
    WebhookTarget,
    webhook_subject,
)
from celeriac.worker_runtime.persisting import persist

if TYPE_CHECKING:
    from celeriac.broker import Broker
    from celeriac.worker_runtime.delivery import Delivery

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 10.0
# A result larger than this (as JSON) is left out of the body, which says so.
MAX_RESULT_BYTES = 64 * 1024
# Jobs wait this long for a dispatcher before JetStream drops them.
STREAM_MAX_AGE = 7 * 24 * 3600.0
# How long a queue's default target (TaskQueue spec.webhooks), read from its work
# stream's metadata, is trusted before it is read again.
DEFAULTS_TTL = 60.0


def stream_config() -> dict[str, Any]:
    """Keyword arguments for nats-py's ``StreamConfig`` of the delivery jobs' stream."""
    return {
        "name": WEBHOOKS_STREAM,
        "subjects": [WEBHOOKS_SUBJECTS],
        "retention": "workqueue",
        "storage": "file",
        "max_age": STREAM_MAX_AGE,
        "duplicate_window": 120.0,
    }


def job_id(task_id: str, stream_sequence: int, event: WebhookEvent) -> str:
    """The delivery's ``webhook-id``: the same for every settling of the same message."""
    return f"{task_id}.{stream_sequence}.{event.value}"


def body(
    event: WebhookEvent,
    message: TaskMessage,
    state: TaskState,
    *,
    at: datetime,
    result: Any = None,
    error: str | None = None,
    exc_type: str | None = None,
    reason: str | None = None,
) -> str:
    """The JSON text POSTed: ``{type, timestamp, data}`` as Standard Webhooks suggests."""
    data: dict[str, Any] = {"task_id": message.id, "task": message.task,
                            "queue": message.queue, "state": state.value}  # fmt: skip
    if state is TaskState.SUCCESS:
        try:
            encoded = json.dumps(result)
        except (TypeError, ValueError):
            encoded = None
        if encoded is not None and len(encoded.encode()) <= MAX_RESULT_BYTES:
            data["result"] = result
        else:
            data["result_omitted"] = True  # too large, or not JSON: read it from the store
    if error is not None:
        data["error"] = error
    if exc_type is not None:
        data["exc_type"] = exc_type
    if reason is not None:
        data["reason"] = reason
    document = {"type": f"task.{event.value}", "timestamp": at.isoformat(), "data": data}
    return json.dumps(document, separators=(",", ":"))


@dataclass
class QueueDefaults:
    """Each queue's default target, from its work stream's metadata (the operator
    writes TaskQueue ``spec.webhooks`` there), read at most once a minute."""

    broker: Broker
    _known: dict[str, tuple[WebhookTarget | None, float]] = field(default_factory=dict)

    async def of(self, queue: str) -> WebhookTarget | None:
        """The default target of ``queue``; None when it has none or cannot be read."""
        now = time.monotonic()
        known = self._known.get(queue)
        if known is not None and now - known[1] < DEFAULTS_TTL:
            return known[0]
        try:
            info = await self.broker.js.stream_info(names.stream_name(queue))
        except Exception as exc:  # unknown for now: none, and ask again next time
            log.debug("cannot read the stream of %s: %r", queue, exc)
            return None
        raw = (info.config.metadata or {}).get(QUEUE_WEBHOOK_KEY)
        target = None
        if raw:
            try:
                target = WebhookTarget.model_validate_json(raw)
            except ValidationError:
                log.warning("queue %s: ignoring an invalid %s in its stream", queue,
                            QUEUE_WEBHOOK_KEY)  # fmt: skip
        self._known[queue] = (target, now)
        return target


@dataclass
class WebhookJobs:
    """Publishes the delivery jobs of one worker."""

    broker: Broker
    _stream_ready: bool = field(default=False, init=False)
    defaults: QueueDefaults = field(init=False)

    def __post_init__(self) -> None:
        self.defaults = QueueDefaults(self.broker)

    async def notify(
        self,
        delivery: Delivery,
        message: TaskMessage,
        event: WebhookEvent,
        state: TaskState,
        **outcome: Any,
    ) -> None:
        """Publish the job for ``event`` if ``message`` (or else its queue) asks for it;
        raises when NATS does not take it (the caller redelivers the message to settle
        it again)."""
        target = message.webhook or await self.defaults.of(delivery.queue)
        if target is None or event not in target.events:
            return
        now = datetime.now(UTC)
        job = WebhookJob(
            id=job_id(message.id, delivery.stream_sequence, event),
            queue=delivery.queue,
            task_id=message.id,
            task=message.task,
            event=event,
            target=target,
            body=body(event, message, state, at=now, **outcome),
            created=now,
        )
        await persist(lambda: self._publish(job), "webhook job")

    async def _publish(self, job: WebhookJob) -> None:
        js = self.broker.js
        if not self._stream_ready:
            try:
                await js.stream_info(WEBHOOKS_STREAM)
            except NotFoundError:
                await js.add_stream(**stream_config())
            self._stream_ready = True
        await js.publish(
            webhook_subject(job.queue),
            job.dumps(),
            timeout=PUBLISH_TIMEOUT,
            headers={names.HDR_MSG_ID: job.id},
        )
