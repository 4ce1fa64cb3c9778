"""Exactly-once chord callbacks, counted in the KV bucket ``celeriac_chords``.

One document per chord (keyed by the callback's task id) holds each member's
result by index. Members update it by compare-and-set, so concurrent members and
redelivered members never lose or double-count an outcome. The member whose
outcome completes the chord publishes the callback (its id is the ``Nats-Msg-Id``,
so a racing redelivery is dropped by the server) and then marks the document
settled, so even a redelivery long after the duplicate window does nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from pydantic import BaseModel, Field

from celeriac.protocol.envelope import ChordRef

if TYPE_CHECKING:
    from collections.abc import Callable

    from nats.js.kv import KeyValue

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


def _ordered(progress: ChordProgress, size: int) -> list[Any]:
    indexes = [str(i) for i in range(size)]
    if all(i in progress.results for i in indexes):
        return [progress.results[i] for i in indexes]
    # Members submitted without an index (hand-written messages): arrival order.
    return list(progress.results.values())


async def chord_member_succeeded(
    kv: KeyValue, ref: ChordRef, key: str, result: Any
) -> list[Any] | None:
    """Record a member's result; the results in member order if the callback is due now.

    The caller publishes the callback, then calls ``settle``; a redelivery in between
    publishes it again under the same id, which the server drops.
    """

    def add(progress: ChordProgress) -> bool:
        if key in progress.results:
            return False
        progress.results[key] = result
        return True

    progress = await _update(kv, ref.id, ref.size, add)
    if progress.complete and not progress.settled and progress.failed is None:
        return _ordered(progress, ref.size)
    return None


async def chord_member_failed(
    kv: KeyValue, ref: ChordRef, reason: str, exc_type: str | None
) -> tuple[str, str] | None:
    """Record a member's final failure (``reason`` names it); the callback will not run.

    Returns the chord's failure (reason, exception type) while it is not settled yet:
    the caller stores it under the callback's id, fails what follows, then calls
    ``settle``. The first member to fail is the one the chord names.
    """

    def fail(progress: ChordProgress) -> bool:
        if progress.failed is not None or progress.settled:
            return False
        progress.failed, progress.failed_exc_type = reason, exc_type
        return True

    progress = await _update(kv, ref.id, ref.size, fail)
    if progress.failed is not None and not progress.settled:
        return progress.failed, progress.failed_exc_type or "ChordError"
    return None


async def settle(kv: KeyValue, ref: ChordRef) -> None:
    """Mark the chord done (callback published or failure recorded): nothing more happens."""
    await _update(kv, ref.id, ref.size, _settle)


def _settle(progress: ChordProgress) -> bool:
    if progress.settled:
        return False
    progress.settled = True
    return True
