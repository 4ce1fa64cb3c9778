"""Messages JetStream stopped delivering: dead-lettered instead of left in the stream.

When a queue's consumer has ``maxDeliveries`` and every delivery of a message ended
without the worker settling it (the worker crashed or was killed while running it),
JetStream keeps the message in the work stream but never delivers it again, and
publishes an advisory saying so. One worker of the queue (a queue group) takes each
advisory: it dead-letters the message as poison, records FAILURE for its task id
(unless a final result exists) and deletes it from the work stream, so no message
is left to rot until the stream's age limit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError

from celeriac.protocol import names
from celeriac.protocol.envelope import DeadLetter, DeadLetterReason, ResultRecord, TaskMessage
from celeriac.protocol.states import TaskState
from celeriac.worker_runtime.deadletters import (
    HEADROOM,
    fit,
    original_headers,
    publish_dead_letter,
)
from celeriac.worker_runtime.decoding import decode_task

if TYPE_CHECKING:
    from celeriac.broker import Broker

log = logging.getLogger(__name__)

_GROUP = "celeriac-max-deliveries"


def advisory_subject(queue: str) -> str:
    """Where JetStream announces a message of ``queue`` it will not deliver again."""
    stream = names.stream_name(queue)
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{names.CONSUMER_NAME}"


class ExhaustedDeliveries:
    """Follows the max-deliveries advisories of the worker's queues."""

    def __init__(self, broker: Broker, queues: Sequence[str], worker: str) -> None:
        self._broker = broker
        self._queues = queues
        self._worker = worker
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        """Subscribe (as one of the queue's workers) to each queue's advisories."""
        for queue in self._queues:

            async def on_advisory(msg: Msg, queue: str = queue) -> None:
                try:
                    await self.settle(queue, msg.data)
                except Exception:  # the message stays; the next advisory or a person acts
                    log.exception("could not dead-letter an undeliverable message of %s", queue)

            sub = await self._broker.nc.subscribe(
                advisory_subject(queue), queue=_GROUP, cb=on_advisory
            )
            self._subs.append(sub)

    async def stop(self) -> None:
        """Stop following advisories."""
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # a closed connection has nothing to unsubscribe
                log.debug("unsubscribe failed: %r", exc)
        self._subs.clear()

    async def settle(self, queue: str, advisory: bytes) -> None:
        """Dead-letter, record and delete the message the advisory names."""
        doc = json.loads(advisory)
        sequence, deliveries = int(doc["stream_seq"]), int(doc.get("deliveries", 0))
        stream = names.stream_name(queue)
        js = self._broker.js
        try:
            raw = await js.get_msg(stream, sequence)
        except NotFoundError:
            return  # settled in the meantime
        body = raw.data or b""
        decoded = decode_task(body)
        message = decoded if isinstance(decoded, TaskMessage) else None
        error = (
            f"JetStream stopped delivering it after {deliveries} deliveries (the queue's "
            "maxDeliveries), each ended without an outcome: the worker running it crashed, "
            "was killed, or lost its connection to NATS"
        )
        letter = DeadLetter(
            reason=DeadLetterReason.POISON,
            error=error,
            task_id=message.id if message else None,
            task=message.task if message else None,
            queue=queue,
            deliveries=deliveries,
            stream_sequence=sequence,
            worker=self._worker,
            failed_at=datetime.now(UTC),
            original="",
            original_headers=original_headers(dict(raw.headers or {})),
        )
        letter = fit(letter, body, self._broker.nc.max_payload - HEADROOM)
        await publish_dead_letter(self._broker, letter)
        if message is not None:
            await self._record(message, error)
        await js.delete_msg(stream, sequence)
        log.error("dead-lettered message %d of %s: %s", sequence, queue, error)

    async def _record(self, message: TaskMessage, error: str) -> None:
        results = self._broker.results
        existing = await results.get(message.id)
        if existing is not None and existing.state.ready:
            return
        record = ResultRecord(
            state=TaskState.FAILURE,
            task=message.task,
            error=f"PoisonMessage: {error}",
            exc_type="PoisonMessage",
            worker=self._worker,
            date_done=datetime.now(UTC),
        )
        await results.put(message.id, record)
