"""What happens after a task finishes: links, the next chain step or group, chord
counting, errbacks, and marking what can no longer run.

The worker calls ``on_success`` after a task succeeded and ``on_failure`` after it
failed for good (no retry left) or was revoked. Both are idempotent, because a
worker that dies after calling them but before acking gets the message redelivered:

- everything they publish has a task id fixed at submit time (or derived from its
  parent's id and position), and ids are ``Nats-Msg-Id``, so publishing it twice
  enqueues it once;
- chord members record their outcome in one KV document per chord, updated by
  compare-and-set, keyed by member index, and the document remembers when the
  callback was published, so the callback is published exactly once.

Every message is built (and so checked) before the first is published: a step that
cannot be sent leaves nothing half sent, and ends the task as ``InvalidContinuation``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celeriac.protocol import jetstream, names
from celeriac.protocol.envelope import ResultRecord, Signature, TaskMessage
from celeriac.protocol.states import TaskState
from celeriac.submitting import Delayed
from celeriac.worker_runtime.chording import chord_member_failed, chord_member_succeeded, settle
from celeriac.worker_runtime.launching import (
    Membership,
    callback_message,
    dependants,
    launch,
    linked_message,
)
from celeriac.worker_runtime.persisting import TRANSIENT

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from celeriac.broker import Broker

log = logging.getLogger(__name__)


class ContinuationError(ValueError):
    """What follows a task cannot be sent (an invalid step); sending again fails again."""

    def __init__(self, what: str, cause: Exception) -> None:
        super().__init__(str(cause))
        # Which part: "the next chain step", "a linked task", "the chord callback".
        self.what = what


def next_messages(message: TaskMessage, result: Any) -> list[Delayed]:
    """What starts after ``message`` returned ``result``: links, then the next step."""
    try:
        out = [
            linked_message(message, "link", index, sig, first=result, owner=message.id)
            for index, sig in enumerate(message.link)
        ]
    except (TypeError, ValueError) as exc:
        raise ContinuationError("a linked task", exc) from exc
    if message.chain:
        try:
            out += launch(
                message.chain,
                result=result,
                parent=message,
                seed=message.id,
                membership=Membership.of(message),
            )
        except (TypeError, ValueError) as exc:
            raise ContinuationError("the next chain step", exc) from exc
    return out


class Continuation:
    """Continues canvases on one broker; opens the chords bucket once."""

    def __init__(self, broker: Broker, chords_ttl: float = jetstream.CHORDS_TTL_SECONDS) -> None:
        self.broker = broker
        self._chords_ttl = chords_ttl
        self._chords: KeyValue | None = None

    async def chords(self) -> KeyValue:
        """The chord counters bucket."""
        if self._chords is None:
            declarer = self.broker.declarer
            self._chords = await declarer.bucket(names.CHORDS_BUCKET, ttl=self._chords_ttl)
        return self._chords

    async def _publish(self, items: Iterable[Delayed]) -> None:
        await asyncio.gather(
            *(self.broker.publish_task(d.message, countdown=d.countdown) for d in items)
        )

    async def on_success(self, message: TaskMessage, result: Any) -> None:
        """Continue what ``message`` is part of, after it returned ``result``.

        Raises ``ContinuationError`` when a step cannot be sent (nothing was sent).
        """
        await self._publish(next_messages(message, result))
        # A member that is a chain counts in its chord when its last step is done.
        if not message.chain and message.chord is not None:
            await self._counted(message, result)

    async def _counted(self, message: TaskMessage, result: Any) -> None:
        assert message.chord is not None
        ref, kv = message.chord, await self.chords()
        key = Membership.of(message).key(message.id)
        results = await chord_member_succeeded(kv, ref, key, result)
        if results is not None:
            try:
                callback = callback_message(message, results)
            except (TypeError, ValueError) as exc:
                raise ContinuationError("the chord callback", exc) from exc
            await self._publish([callback])
            await settle(kv, ref)

    async def on_failure(self, message: TaskMessage, record: ResultRecord) -> None:
        """Settle what depended on ``message`` after it failed for good with ``record``.

        The rest of its chain (groups and chord callbacks in it included) is marked
        FAILURE: it will never run. A chord it belongs to does not run its callback and
        its result becomes FAILURE naming this member. Its errbacks (``link_error``)
        are sent with its id when it ended FAILURE (not when revoked).
        """
        cause = f"earlier chain step {message.id} failed: {record.error}"
        await self._not_run(dependants(message.chain, message.id), cause, record)
        membership = Membership.of(message)
        if membership.chord is not None:
            reason = f"chord member {message.id} (index {message.group_index}) failed: "
            reason += f"{record.error}"
            await self._member_failed(message, membership, reason, record)
        if record.state is TaskState.FAILURE:
            await self._errbacks(message, message.link_error, message.id)

    async def _member_failed(
        self,
        message: TaskMessage,
        membership: Membership,
        reason: str,
        record: ResultRecord,
    ) -> None:
        """A member of ``membership``'s chord failed: fail the chord, once, and its followers."""
        ref, kv = membership.chord, await self.chords()
        assert ref is not None
        failed = await chord_member_failed(kv, ref, reason, record.exc_type)
        if failed is None:
            return
        error, exc_type = failed
        callback = ref.callback
        stored = ResultRecord(
            state=TaskState.FAILURE,
            task=callback.task,
            error=error,
            exc_type=exc_type,
            exc_module=record.exc_module if record.exc_type == exc_type else None,
            traceback=record.traceback,
            date_done=datetime.now(UTC),
        )
        await self.broker.results.put(ref.id, stored)
        await self._not_run(dependants(callback.chain, ref.id), error, stored)
        outer = Membership.of(callback)
        if outer.chord is not None:
            # This chord is itself a member of a chord: that one fails too, naming it.
            why = f"chord member {ref.id} (index {outer.group_index}) failed: {error}"
            await self._member_failed(message, outer, why, stored)
        await self._errbacks(message, callback.link_error, ref.id)
        await settle(kv, ref)

    async def _not_run(
        self, tasks: Iterable[tuple[str, Signature]], cause: str, record: ResultRecord
    ) -> None:
        now = datetime.now(UTC)
        for task_id, step in tasks:
            failed = ResultRecord(
                state=TaskState.FAILURE,
                task=step.task,
                error=f"not run: {cause}",
                exc_type=record.exc_type,
                exc_module=record.exc_module,
                traceback=record.traceback,
                date_done=now,
            )
            await self.broker.results.put(task_id, failed)

    async def _errbacks(
        self, message: TaskMessage, errbacks: list[Signature], failed_id: str
    ) -> None:
        """Send ``errbacks`` with ``failed_id`` first; one that cannot be sent is logged."""
        items = []
        for index, errback in enumerate(errbacks):
            try:
                items.append(
                    linked_message(
                        message, "link_error", index, errback, first=failed_id, owner=failed_id
                    )
                )
            except (TypeError, ValueError) as exc:
                # Nothing to fail in its stead: the task has its outcome already.
                log.error("errback not sent: %s", exc)
        await asyncio.gather(*(self._errback(item) for item in items))

    async def _errback(self, item: Delayed) -> None:
        """Publish one errback; an error that would repeat (a missing queue, a delay the
        server refuses) is logged, as sending it again would not help. A connection
        error propagates: the message is settled again later, errbacks included."""
        try:
            await self.broker.publish_task(item.message, countdown=item.countdown)
        except TRANSIENT:
            raise
        except Exception as exc:
            log.error("errback %s (%s) not sent: %s", item.message.task, item.message.id, exc)
