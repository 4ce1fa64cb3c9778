"""Dead letters read, replayed and purged: what ``celeriac dlq`` and the dashboard use.

Stateless like ``celeriac.inspection``: every call reads the queues' dead-letter
streams (``CELERIAC_DLQ_<queue>``) when asked. Listing is bounded: it walks a stream
backwards by sequence, one stored message at a time, and stops after ``limit``
letters (or ``SCAN_LIMIT`` messages read when filtering), never loading a stream.

A ``webhook_failed`` letter holds a webhook delivery job, not a task: its replay
publishes the job again for ``celeriac webhooks`` to deliver (the task does not run).

A replay publishes the original message again on its queue's task subject, under a
fresh ``Nats-Msg-Id`` (the task id would be dropped as a duplicate inside the
stream's duplicate window), resets a final result stored under the task id to
PENDING (so ``AsyncResult.get()`` waits for the new run instead of returning the old
FAILURE), and only then, once JetStream acknowledged the publish, deletes the letter.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import heapq
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from pydantic import ValidationError

from celeriac.inspection import UnknownQueueError
from celeriac.protocol import names
from celeriac.protocol.envelope import DeadLetter, DeadLetterReason, ResultRecord, TaskMessage
from celeriac.protocol.signing import HDR_SIGNATURE, SigningKeys
from celeriac.protocol.states import TaskState
from celeriac.protocol.webhooks import WebhookJob, webhook_subject
from celeriac.streams import dead_letter_queues

#: Most stored messages one listing (or a lookup by task id) reads while filtering.
SCAN_LIMIT = 10_000
#: Says which dead letter a replayed message came from (``<queue>:<sequence>``).
HDR_REPLAY_OF = "Celeriac-Replay-Of"
PUBLISH_TIMEOUT = 10.0
# Sequences read at once when walking a single stream.
_BATCH = 32
# A replay would be dead-lettered again for these reasons, whatever changed since.
_HOPELESS = {
    DeadLetterReason.MALFORMED: "the original is not a valid task message",
    DeadLetterReason.UNSUPPORTED_VERSION: "the original speaks a protocol version "
    "workers do not support",
}
# Sending these again would vouch (with the replayer's key) for a message nobody vouched for.
_UNVERIFIED = (DeadLetterReason.UNSIGNED, DeadLetterReason.BAD_SIGNATURE)


@dataclass(frozen=True)
class DeadLetterEntry:
    """One stored dead letter and where it is."""

    queue: str
    sequence: int  # the message's sequence in the queue's dead-letter stream
    stored: datetime  # when it was dead-lettered (the stream's timestamp)
    letter: DeadLetter

    @property
    def ref(self) -> str:
        """``<queue>:<sequence>``: what ``dlq show`` and ``dlq replay`` take."""
        return f"{self.queue}:{self.sequence}"

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``-o json``)."""
        return {
            "ref": self.ref,
            "queue": self.queue,
            "sequence": self.sequence,
            "stored": self.stored.isoformat(),
            **self.letter.model_dump(mode="json"),
        }


class ReplayOutcome(StrEnum):
    """What a replay did with one dead letter."""

    REPLAYED = "replayed"
    WOULD_REPLAY = "would_replay"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Replay:
    """The outcome of replaying one dead letter."""

    entry: DeadLetterEntry
    outcome: ReplayOutcome
    why: str | None  # for SKIPPED: a sentence
    task_id: str | None  # the id the replayed task runs under


async def _bounds(js: JetStreamContext, queue: str) -> tuple[int, int, int]:
    """(first sequence, last sequence, messages) of ``queue``'s dead-letter stream."""
    stream = names.dead_letter_stream_name(queue)
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        raise UnknownQueueError(
            f"unknown queue {queue!r}: there is no dead-letter stream {stream}"
        ) from None
    state = info.state
    return int(state.first_seq or 0), int(state.last_seq or 0), int(state.messages or 0)


async def _read(js: JetStreamContext, queue: str, sequence: int) -> DeadLetterEntry | None:
    """The letter stored at ``sequence``; None when deleted or not a dead letter."""
    try:
        msg = await js.get_msg(names.dead_letter_stream_name(queue), sequence)
        letter = DeadLetter.model_validate_json(msg.data or b"")
    except (NotFoundError, ValidationError):
        return None
    return DeadLetterEntry(queue, sequence, msg.time or letter.failed_at, letter)


def _matcher(task: str | None, reason: str | None) -> Callable[[DeadLetterEntry], bool]:
    wanted = DeadLetterReason(reason) if reason is not None else None
    return lambda e: (
        (task is None or e.letter.task == task) and (wanted is None or e.letter.reason is wanted)
    )


class _Cursor:
    """Walks one dead-letter stream from its newest message back to its oldest."""

    def __init__(self, js: JetStreamContext, queue: str, first: int, last: int, batch: int):
        self.js, self.queue, self.first, self.next, self.batch = js, queue, first, last, batch
        self.ready: list[DeadLetterEntry | None] = []

    async def pop(self, budget: list[int], want: int) -> DeadLetterEntry | None:
        """The next stored letter back, or None at the start of the stream (or when the
        shared ``budget`` of reads ran out); reads ahead at most ``want`` messages."""
        while True:
            if not self.ready:
                size = min(self.batch, want, self.next - self.first + 1, budget[0])
                if size <= 0:
                    return None
                seqs = range(self.next, self.next - size, -1)
                self.next -= size
                budget[0] -= size
                self.ready = list(await asyncio.gather(*(_read(self.js, self.queue, s)
                                                         for s in seqs)))  # fmt: skip
                self.ready.reverse()  # pop() from the end: newest first
            entry = self.ready.pop()
            if entry is not None:
                return entry


async def _cursors(js: JetStreamContext, queue: str | None) -> list[_Cursor]:
    bounds: list[tuple[int, int, int] | BaseException]
    if queue is not None:
        queues, bounds = [queue], [await _bounds(js, queue)]
    else:
        queues = await dead_letter_queues(js)
        bounds = await asyncio.gather(*(_bounds(js, q) for q in queues), return_exceptions=True)
    # Batches only for one stream: merging several reads each one letter ahead.
    batch = _BATCH if len(queues) == 1 else 1
    cursors = []
    for name, bound in zip(queues, bounds, strict=True):
        if isinstance(bound, UnknownQueueError):
            continue  # deleted since it was listed
        if isinstance(bound, BaseException):
            raise bound
        first, last, count = bound
        if count > 0:
            cursors.append(_Cursor(js, name, first, last, batch))
    return cursors


async def _newest(
    js: JetStreamContext,
    queue: str | None,
    match: Callable[[DeadLetterEntry], bool],
    limit: int,
    scan: int,
) -> list[DeadLetterEntry]:
    """Up to ``limit`` matching letters, newest first, reading at most ``scan`` messages."""
    if limit <= 0:
        return []
    cursors = await _cursors(js, queue)
    budget = [scan]
    heads = await asyncio.gather(*(c.pop(budget, limit) for c in cursors))
    # Newest first across streams: by time, then by sequence within a stream.
    heap = [(-h.stored.timestamp(), -h.sequence, i, h) for i, h in enumerate(heads) if h]
    heapq.heapify(heap)
    found: list[DeadLetterEntry] = []
    while heap and len(found) < limit:
        _, _, i, entry = heapq.heappop(heap)
        if match(entry):
            found.append(entry)
            if len(found) == limit:
                break
        following = await cursors[i].pop(budget, limit - len(found))
        if following is not None:
            heapq.heappush(heap, (-following.stored.timestamp(), -following.sequence, i,
                                  following))  # fmt: skip
    return found


async def list_dead_letters(
    js: JetStreamContext,
    queue: str | None = None,
    *,
    task: str | None = None,
    reason: str | None = None,
    limit: int = 100,
) -> list[DeadLetterEntry]:
    """The newest dead letters of ``queue`` (None: every queue), newest first.

    ``task`` and ``reason`` (a ``DeadLetterReason`` value) filter them. Reads about
    ``limit`` letters (one more per stream when merging several) and never more than
    ``SCAN_LIMIT`` stored messages, however many do not match or were deleted.
    Raises ``UnknownQueueError`` when ``queue`` has no dead-letter stream.
    """
    return await _newest(js, queue, _matcher(task, reason), limit, SCAN_LIMIT)


async def dead_letter_count(js: JetStreamContext, queue: str | None = None) -> int:
    """How many dead letters ``queue`` (None: every queue) holds."""
    queues = [queue] if queue is not None else await dead_letter_queues(js)
    return sum(count for _, _, count in await asyncio.gather(*(_bounds(js, q) for q in queues)))


def _parse_ref(ref: str) -> tuple[str, int] | None:
    queue, _, sequence = ref.rpartition(":")
    if not queue or not sequence.isdigit() or not names.is_valid_queue_name(queue):
        return None
    return queue, int(sequence)


async def find_dead_letter(js: JetStreamContext, ref: str) -> DeadLetterEntry | None:
    """The letter ``ref`` names: ``<queue>:<sequence>``, or a task id (the newest letter
    of that task among the last ``SCAN_LIMIT`` stored); None when there is none."""
    parsed = _parse_ref(ref)
    if parsed is not None:
        queue, sequence = parsed
        await _bounds(js, queue)  # an unknown queue is an error, not "no such letter"
        return await _read(js, queue, sequence)
    if not names.is_valid_task_id(ref):
        return None
    found = await _newest(js, None, lambda e: e.letter.task_id == ref, 1, SCAN_LIMIT)
    return found[0] if found else None


def _original(letter: DeadLetter) -> bytes:
    if letter.original_encoding == "base64":
        return base64.b64decode(letter.original)
    return letter.original.encode()


def _headers(
    entry: DeadLetterEntry, message: TaskMessage, body: bytes, keys: SigningKeys | None
) -> dict[str, str]:
    """The original headers, minus those the server acts on, under a fresh message id;
    signed anew with ``keys`` (the old signature covered the old id)."""
    kept = {k: v for k, v in entry.letter.original_headers.items()
            if not k.lower().startswith("nats-") and k != HDR_SIGNATURE}  # fmt: skip
    headers = {
        **kept,
        names.HDR_TASK: message.task,
        names.HDR_PROTOCOL: str(message.v),
        names.HDR_MSG_ID: f"{message.id}.replay.{os.urandom(8).hex()}",
        HDR_REPLAY_OF: entry.ref,
    }
    if keys is not None:
        headers[HDR_SIGNATURE] = keys.sign(entry.queue, headers[names.HDR_MSG_ID], body)
    return headers


async def _revoked(js: JetStreamContext, task_id: str) -> str | None:
    try:
        entry = await (await js.key_value(names.REVOKED_BUCKET)).get(task_id)
    except (BucketNotFoundError, KeyNotFoundError, NotFoundError):
        return None
    return (entry.value or b"revoked").decode(errors="replace")


async def _queue_exists(js: JetStreamContext, queue: str) -> bool:
    try:
        await js.stream_info(names.stream_name(queue))
    except NotFoundError:
        return False
    return True


def replayable(letter: DeadLetter, now: datetime) -> TaskMessage | str:
    """The task message ``letter`` holds, or why sending it again cannot help (pure)."""
    if letter.original_truncated:
        return (
            f"the original was truncated to fit the letter ({letter.original_size} bytes); "
            "it cannot be sent again"
        )
    if letter.reason in _HOPELESS:
        return f"{_HOPELESS[letter.reason]}; it would be dead-lettered again"
    if letter.reason in _UNVERIFIED:
        return (
            "its signature did not verify, so where it came from is unknown; it is not "
            "sent again (have its producer send it, signed)"
        )
    try:
        message = TaskMessage.model_validate_json(_original(letter))
    except (ValidationError, ValueError):
        return "the original is not a valid task message; it would be dead-lettered again"
    expires = message.expires
    if expires is not None:
        expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
        if expires <= now:
            return f"task {message.id} expired at {expires.isoformat()}; workers would skip it"
    return message


async def _check(js: JetStreamContext, entry: DeadLetterEntry) -> TaskMessage | str:
    """The task message to publish again, or why replaying cannot help."""
    checked = replayable(entry.letter, datetime.now(UTC))
    if isinstance(checked, str):
        return checked
    if not await _queue_exists(js, entry.queue):
        return f"queue {entry.queue!r} is gone (no stream {names.stream_name(entry.queue)})"
    revoked = await _revoked(js, checked.id)
    if revoked is not None:
        return f"task {checked.id} is revoked ({revoked}); workers would skip it"
    return checked


async def _reset_result(js: JetStreamContext, message: TaskMessage, revision: int | None) -> None:
    """Store PENDING under the task id unless a worker wrote since ``revision`` was read."""
    if revision is None:
        return  # nothing stored: a waiter already waits
    try:
        kv = await js.key_value(names.RESULTS_BUCKET)
        record = ResultRecord(state=TaskState.PENDING, task=message.task)
        await kv.update(message.id, record.dumps(), last=revision)
    except (NatsError, NotFoundError):
        pass  # the new run wrote first (or the bucket went): its state stands


async def _final_revision(js: JetStreamContext, task_id: str) -> int | None:
    """The revision of a final result stored under ``task_id``, else None."""
    try:
        entry = await (await js.key_value(names.RESULTS_BUCKET)).get(task_id)
        record = ResultRecord.model_validate_json(entry.value or b"")
    except (BucketNotFoundError, KeyNotFoundError, NotFoundError, ValidationError):
        return None
    return entry.revision if record.state.ready else None


def webhook_job(letter: DeadLetter) -> WebhookJob | str:
    """The webhook delivery job a ``webhook_failed`` letter holds, or why it cannot be sent."""
    if letter.original_truncated:
        return "the original job was truncated to fit the letter; it cannot be sent again"
    try:
        return WebhookJob.model_validate_json(_original(letter))
    except (ValidationError, ValueError):
        return "the original is not a valid webhook job"


async def _replay_webhook(js: JetStreamContext, entry: DeadLetterEntry, dry_run: bool) -> Replay:
    """Queue a failed webhook delivery again: a new job with the same ``webhook-id``."""
    job = webhook_job(entry.letter)
    if isinstance(job, str):
        return Replay(entry, ReplayOutcome.SKIPPED, job, None)
    if dry_run:
        return Replay(entry, ReplayOutcome.WOULD_REPLAY, None, job.task_id)
    headers = {names.HDR_MSG_ID: f"{job.id}.replay.{os.urandom(8).hex()}", HDR_REPLAY_OF: entry.ref}
    await js.publish(webhook_subject(job.queue), job.dumps(), timeout=PUBLISH_TIMEOUT,
                     headers=headers)  # fmt: skip
    with contextlib.suppress(NotFoundError):
        await js.delete_msg(names.dead_letter_stream_name(entry.queue), entry.sequence)
    return Replay(entry, ReplayOutcome.REPLAYED, None, job.task_id)


async def _replay_one(
    js: JetStreamContext, entry: DeadLetterEntry, dry_run: bool, keys: SigningKeys | None
) -> Replay:
    if entry.letter.reason is DeadLetterReason.WEBHOOK_FAILED:
        return await _replay_webhook(js, entry, dry_run)
    checked = await _check(js, entry)
    if isinstance(checked, str):
        return Replay(entry, ReplayOutcome.SKIPPED, checked, None)
    if dry_run:
        return Replay(entry, ReplayOutcome.WOULD_REPLAY, None, checked.id)
    revision = await _final_revision(js, checked.id)
    body = _original(entry.letter)
    await js.publish(
        names.task_subject(entry.queue),
        body,
        timeout=PUBLISH_TIMEOUT,
        headers=_headers(entry, checked, body, keys),
    )
    await _reset_result(js, checked, revision)
    with contextlib.suppress(NotFoundError):  # deleted meanwhile (a replay, a purge)
        await js.delete_msg(names.dead_letter_stream_name(entry.queue), entry.sequence)
    return Replay(entry, ReplayOutcome.REPLAYED, None, checked.id)


async def replay(
    js: JetStreamContext,
    entries: Sequence[DeadLetterEntry],
    *,
    dry_run: bool = False,
    keys: SigningKeys | None = None,
) -> list[Replay]:
    """Send each letter's original task again; delete the letter once JetStream has it.

    SKIPPED (with a sentence) when replaying cannot help: the original was truncated,
    is malformed or of an unsupported version, its queue is gone, or its task id is
    revoked or expired, or its signature did not verify. Each is signed anew with
    ``keys``, when given, as a new publish. ``dry_run`` says WOULD_REPLAY or SKIPPED
    and changes nothing.
    A publish that fails keeps its letter; the ones after it are not tried.
    """
    done: list[Replay] = []
    failure: str | None = None
    for entry in entries:
        if failure is not None:
            done.append(Replay(entry, ReplayOutcome.SKIPPED, failure, None))
            continue
        try:
            done.append(await _replay_one(js, entry, dry_run, keys))
        except (NatsError, TimeoutError) as exc:
            why = f"publishing failed ({type(exc).__name__}: {exc}); the letter is kept"
            done.append(Replay(entry, ReplayOutcome.SKIPPED, why, None))
            failure = "not tried after a failed publish; the letter is kept"
    return done


async def purge_dead_letters(js: JetStreamContext, queue: str | None = None) -> int:
    """Delete every dead letter of ``queue`` (None: every queue); how many there were."""
    queues = [queue] if queue is not None else await dead_letter_queues(js)
    purged = 0
    for name in queues:
        _, _, count = await _bounds(js, name)
        if count:
            await js.purge_stream(names.dead_letter_stream_name(name))
        purged += count
    return purged
