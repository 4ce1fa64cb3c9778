"""What JetStream already knows about the queues, workers and tasks, read for people.

Nothing here keeps state: every figure is read when asked, from the queue's
consumer and streams, the ``celeriac_workers`` bucket and the results bucket, so
the admin commands and the dashboard show the same thing after any restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError, NotFoundError
from pydantic import ValidationError

from celeriac.exceptions import CeleriacError
from celeriac.protocol import names
from celeriac.protocol.envelope import ResultRecord
from celeriac.protocol.workers import WorkerRecord
from celeriac.streams import work_queues


class UnknownQueueError(CeleriacError):
    """No such queue: it has no work stream."""


@dataclass(frozen=True)
class QueueStatus:
    """One queue now: tasks waiting, held by workers, redelivered, delayed, dead."""

    queue: str
    waiting: int
    in_flight: int
    redelivered: int
    delayed: int  # messages on the queue's schedule subjects (delayed tasks, schedules)
    dead_letters: int
    rate: float | None  # tasks settled per second while sampled; None: not sampled

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``-o json``)."""
        return asdict(self)


async def _consumer(js: JetStreamContext, queue: str) -> ConsumerInfo:
    try:
        info: ConsumerInfo = await js.consumer_info(
            names.stream_name(names.check_queue_name(queue)), names.CONSUMER_NAME
        )
        return info
    except NotFoundError:
        raise UnknownQueueError(
            f"unknown queue {queue!r}: there is no stream {names.stream_name(queue)} "
            "with its consumer"
        ) from None


async def _messages(js: JetStreamContext, stream: str, subjects: str | None = None) -> int:
    try:
        info = await js.stream_info(stream, subjects_filter=subjects)
    except NotFoundError:
        return 0
    if subjects is None:
        return int(info.state.messages)
    return sum((info.state.subjects or {}).values())


def _settled(info: ConsumerInfo) -> int:
    """Messages the consumer saw settled (its ack floor), as a running count."""
    return int(info.ack_floor.consumer_seq or 0) if info.ack_floor else 0


async def queue_status(js: JetStreamContext, queue: str, sample: float = 0.0) -> QueueStatus:
    """``queue`` now; with ``sample`` > 0 also its rate, read twice that far apart."""
    first, started = await _consumer(js, queue), time.monotonic()
    rate = None
    info = first
    if sample > 0:
        await asyncio.sleep(sample)
        info = await _consumer(js, queue)
        rate = max(0, _settled(info) - _settled(first)) / (time.monotonic() - started)
    return QueueStatus(
        queue=queue,
        waiting=int(info.num_pending or 0),
        in_flight=int(info.num_ack_pending or 0),
        redelivered=int(info.num_redelivered or 0),
        delayed=await _messages(js, names.stream_name(queue), names.schedule_subjects(queue)),
        dead_letters=await _messages(js, names.dead_letter_stream_name(queue)),
        rate=rate,
    )


async def queues_status(
    js: JetStreamContext, queues: Iterable[str] | None = None, sample: float = 0.0
) -> list[QueueStatus]:
    """Every queue (or ``queues``), sampled at the same time, sorted by name."""
    chosen = sorted(set(queues)) if queues is not None else await work_queues(js)
    return list(await asyncio.gather(*(queue_status(js, q, sample) for q in chosen)))


async def live_workers(js: JetStreamContext) -> list[WorkerRecord]:
    """The workers whose records are in the workers bucket, by name."""
    try:
        kv = await js.key_value(names.WORKERS_BUCKET)
        keys = await kv.keys()
    except (BucketNotFoundError, NotFoundError, NoKeysError):
        return []
    found: list[WorkerRecord] = []
    for key in sorted(keys):
        try:
            entry = await kv.get(key)
            found.append(WorkerRecord.model_validate_json(entry.value or b""))
        except (KeyNotFoundError, ValidationError):
            continue  # gone meanwhile, or written by something else
    return found


async def task_result(js: JetStreamContext, task_id: str) -> ResultRecord | None:
    """The stored record of ``task_id``; None while nothing is stored (PENDING)."""
    try:
        entry = await (await js.key_value(names.RESULTS_BUCKET)).get(task_id)
    except (BucketNotFoundError, KeyNotFoundError):
        return None
    return ResultRecord.model_validate_json(entry.value or b"") if entry.value else None


async def purge_queue(js: JetStreamContext, queue: str) -> int:
    """Drop the tasks waiting in ``queue`` (and those held by workers: their acks then
    fail, and they are not run again); delayed tasks and schedules stay. How many."""
    await _consumer(js, queue)
    stream = names.stream_name(queue)
    before = await _messages(js, stream, names.task_subject(queue))
    await js.purge_stream(stream, subject=names.task_subject(queue))
    return before
