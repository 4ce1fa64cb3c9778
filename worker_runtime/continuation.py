"""What happens after a task finishes: the next chain step, chord counting, failures.

The worker calls ``on_success`` after a task succeeded and ``on_failure`` after it
failed for good (no retry left). Both are idempotent, because a worker that dies
after calling them but before acking gets the message redelivered:

- the next chain step has a task id fixed at submit time (or derived from its
  parent's id), and ids are ``Nats-Msg-Id``, so publishing it twice enqueues it once;
- chord members record their outcome in one KV document per chord, updated by
  compare-and-set, keyed by member index, and the document remembers when the
  callback was published, so the callback is published exactly once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celeriac.protocol import jetstream, names
from celeriac.protocol.envelope import ResultRecord, TaskMessage
from celeriac.protocol.states import TaskState
from celeriac.submitting import Delayed
from celeriac.worker_runtime.chording import chord_member_failed, chord_member_succeeded
from celeriac.worker_runtime.launching import signature_message, step_id

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from celeriac.broker import Broker


def next_chain_message(message: TaskMessage, result: Any) -> Delayed:
    """The chain's next step after ``message`` returned ``result``."""
    step, rest = message.chain[0], message.chain[1:]
    args = list(step.args) if step.immutable else [result, *step.args]
    return signature_message(
        step, task_id=step_id(message.id, step), parent=message, args=args, chain=rest
    )


class Continuation:
    """Continues chains and counts chords on one broker; opens the chords bucket once."""

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

    async def on_success(self, message: TaskMessage, result: Any) -> None:
        """Continue what ``message`` is part of, after it returned ``result``."""
        if message.chain:
            nxt = next_chain_message(message, result)
            await self.broker.publish_task(nxt.message, countdown=nxt.countdown)
        if message.chord is not None:
            await chord_member_succeeded(self.broker, await self.chords(), message, result)

    async def on_failure(self, message: TaskMessage, record: ResultRecord) -> None:
        """Settle what depended on ``message`` after it failed for good with ``record``.

        The rest of a chain is marked FAILURE (it will never run); a chord's callback is
        not run and the chord result becomes FAILURE naming this member.
        """
        if message.chain:
            await self._fail_rest_of_chain(message, record)
        if message.chord is not None:
            await chord_member_failed(self.broker, await self.chords(), message, record)

    async def _fail_rest_of_chain(self, message: TaskMessage, record: ResultRecord) -> None:
        parent_id = message.id
        now = datetime.now(UTC)
        for step in message.chain:
            task_id = step_id(parent_id, step)
            failed = ResultRecord(
                state=TaskState.FAILURE,
                task=step.task,
                error=f"not run: earlier chain step {message.id} failed: {record.error}",
                exc_type=record.exc_type,
                traceback=record.traceback,
                date_done=now,
            )
            await self.broker.results.put(task_id, failed)
            parent_id = task_id
