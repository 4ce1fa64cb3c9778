"""Exactly-once chord callbacks, counted in the KV bucket ``celeriac_chords``.

One document per chord (keyed by the callback's task id) holds each member's
result by index. Members update it by compare-and-set, so concurrent members and
redelivered members never lose or double-count an outcome. The member whose
outcome completes the chord publishes the callback (its id is the ``Nats-Msg-Id``,
so a racing redelivery is dropped by the server) and then marks the document
settled, so even a redelivery long after the duplicate window does nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from pydantic import BaseModel, Field

from celeriac.protocol.envelope import ResultRecord, TaskMessage
from celeriac.protocol.states import TaskState
from celeriac.worker_runtime.launching import signature_message

if TYPE_CHECKING:
    from collections.abc import Callable

    from nats.js.kv import KeyValue

    from celeriac.broker import Broker

_CAS_ATTEMPTS = 100


class ChordProgress(BaseModel):
    """The stored state of one chord."""

    size: int
    results: dict[str, Any] = Field(default_factory=dict)
    # "member <id> (index <i>) failed: <error>" once a member failed for good.
    failed: str | None = None
    failed_exc_type: str | None = None
    # True once the callback was published or the failure recorded.
    settled: bool = False

    @property
    def complete(self) -> bool:
        """Every member succeeded."""
        return len(self.results) >= self.size


async def _load(kv: KeyValue, key: str, size: int) -> tuple[ChordProgress, int]:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return ChordProgress(size=size), 0
    return ChordProgress.model_validate_json(entry.value or b"{}"), entry.revision or 0


async def _update(
    kv: KeyValue, key: str, size: int, change: Callable[[ChordProgress], bool]
) -> ChordProgress:
    """Apply ``change`` (returns False when nothing changed) by compare-and-set."""
    for _ in range(_CAS_ATTEMPTS):
        progress, revision = await _load(kv, key, size)
        if not change(progress):
            return progress
        payload = progress.model_dump_json().encode()
        try:
            if revision == 0:
                await kv.create(key, payload)
            else:
                await kv.update(key, payload, last=revision)
        except KeyWrongLastSequenceError:
            continue  # someone else wrote first: reload and apply again
        return progress
    raise RuntimeError(f"chord {key}: too much contention updating its progress")


def _member_key(message: TaskMessage) -> str:
    return str(message.group_index) if message.group_index is not None else message.id


async def chord_member_succeeded(
    broker: Broker, kv: KeyValue, message: TaskMessage, result: Any
) -> None:
    """Record a member's result; publish the callback if this completes the chord."""
    assert message.chord is not None
    ref, key = message.chord, _member_key(message)

    def add(progress: ChordProgress) -> bool:
        if key in progress.results:
            return False
        progress.results[key] = result
        return True

    progress = await _update(kv, ref.id, ref.size, add)
    if progress.complete and not progress.settled and progress.failed is None:
        await _publish_callback(broker, message, progress)
        await _update(kv, ref.id, ref.size, _settle)


async def chord_member_failed(
    broker: Broker, kv: KeyValue, message: TaskMessage, record: ResultRecord
) -> None:
    """Record a member's final failure; the callback will not run, the chord fails."""
    assert message.chord is not None
    ref = message.chord
    reason = f"chord member {message.id} (index {message.group_index}) failed: {record.error}"

    def fail(progress: ChordProgress) -> bool:
        if progress.failed is not None or progress.settled:
            return False
        progress.failed, progress.failed_exc_type = reason, record.exc_type
        return True

    progress = await _update(kv, ref.id, ref.size, fail)
    if progress.failed is not None and not progress.settled:
        failure = ResultRecord(
            state=TaskState.FAILURE,
            task=ref.callback.task,
            error=progress.failed,
            exc_type=progress.failed_exc_type or "ChordError",
            traceback=record.traceback,
            date_done=datetime.now(UTC),
        )
        await broker.results.put(ref.id, failure)
        await _update(kv, ref.id, ref.size, _settle)


def _settle(progress: ChordProgress) -> bool:
    if progress.settled:
        return False
    progress.settled = True
    return True


async def _publish_callback(broker: Broker, message: TaskMessage, progress: ChordProgress) -> None:
    assert message.chord is not None
    ref = message.chord
    indexes = [str(i) for i in range(ref.size)]
    if all(i in progress.results for i in indexes):
        ordered = [progress.results[i] for i in indexes]
    else:  # members submitted without an index (hand-written messages): arrival order
        ordered = list(progress.results.values())
    step = ref.callback
    args = list(step.args) if step.immutable else [ordered, *step.args]
    launched = signature_message(step, task_id=ref.id, parent=message, args=args)
    callback = launched.message.model_copy(update={"parent_id": message.group_id or message.id})
    await broker.publish_task(callback, countdown=launched.countdown)
