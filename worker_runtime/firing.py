"""A periodic task's fire: turned into one ordinary task run per slot, never run itself.

The server fires a schedule by copying its body (a ``PeriodicTask``) and custom headers
onto the task subject, adding ``Nats-Schedule-Next``. A worker taking such a delivery
works out the slot it stands for, then, under the schedule's state in the
``celeriac_schedules`` bucket (read-modify-write on the key's revision):

- a slot not after the last one handled is a second fire of it (after a leader
  change or a graceful restart), or an older slot whose fire came back after a
  failure once a later slot ran (missed slots collapse into the latest run):
  nothing is enqueued, nothing counted;
- with ``Forbid`` an unfinished previous run skips the slot; with ``Replace`` it is
  revoked and the slot runs;
- otherwise the run is published as an ordinary task whose id is ``run_id(name,
  slot)`` (so JetStream drops a second publish of it), then the state is updated.

Only the server can put ``Nats-Schedule-Next`` on a message of a stream that
allows schedules (a client's publish carrying it is refused, error 10212). The
server fires nothing for slots it missed while down (a single server killed), so
the operator and starting workers publish a catch-up fire for the latest missed
slot instead: ``Celeriac-Catch-Up`` names the slot, which must be a slot of the
schedule and not in the future. A delivery with ``Celeriac-Periodic`` and neither
header is dead-lettered as malformed, like any other bad fire.

The run is published before the state is written: if the write fails, the fire is
redelivered and publishes the same id again, which JetStream drops. A failure of
either NAKs the fire with a delay, so the queue's maxDeliveries bounds the attempts.
The decisions are pure functions, tested without a server.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from celeriac.cron import parse_schedule_next, slot_of
from celeriac.periodic import latest_slot, run_window
from celeriac.protocol import jetstream, names
from celeriac.protocol.envelope import DeadLetterReason, TaskMessage
from celeriac.protocol.periodic import (
    HDR_CATCH_UP,
    HDR_PERIODIC,
    HDR_SCHEDULE_NEXT,
    ConcurrencyPolicy,
    PeriodicTask,
    ScheduleState,
    run_id,
)
from celeriac.protocol.states import TaskState
from celeriac.worker_runtime.decoding import Rejection, decode_periodic
from celeriac.worker_runtime.tracing import firing

if TYPE_CHECKING:
    from celeriac.broker import Broker
    from celeriac.declaring import Declarer
    from celeriac.worker_runtime.delivery import Delivery

log = logging.getLogger(__name__)

# A fire whose run or state could not be stored comes back this much later.
FIRE_RETRY_DELAY = 5.0
# Attempts at writing a schedule's state when other workers write it at the same time.
STATE_ATTEMPTS = 5
# A run recorded STARTED this long after it could last have started is taken for a
# leftover (its worker died and its message is gone) and no longer holds the schedule.
STALE_STARTED = timedelta(days=1)
_MAX_NEXT_CHARS = 64
# Clocks differ: a catch-up fire for a slot this little ahead of ours is still taken.
CATCH_UP_LEEWAY = timedelta(seconds=5)


@dataclass(frozen=True)
class Fire:
    """A decoded fire: the schedule, the slot it stands for and the id of that slot's run."""

    periodic: PeriodicTask
    slot: datetime
    run: str


def is_fire(headers: Mapping[str, str] | None) -> bool:
    """True when a delivery with ``headers`` is a periodic task's fire, not a task."""
    return headers is not None and HDR_PERIODIC in headers


def decode_fire(
    data: bytes,
    headers: Mapping[str, str] | None,
    queue: str,
    now: datetime | None = None,
) -> Fire | Rejection:
    """The fire in a delivery from ``queue``, or why it is malformed; never raises."""
    periodic = decode_periodic(data)
    if isinstance(periodic, Rejection):
        return periodic
    name = periodic.name

    def malformed(problem: str) -> Rejection:
        error = f"fire of schedule {name!r}: {problem}"
        return Rejection(DeadLetterReason.MALFORMED, error, None, periodic.task)

    if periodic.queue != queue:
        return malformed(f"its queue {periodic.queue!r} is not the queue it came from ({queue!r})")
    try:
        slot = fire_slot(periodic, headers or {}, now or datetime.now(UTC))
    except ValueError as exc:
        return malformed(str(exc)[:300])
    return Fire(periodic, slot, run_id(name, slot))


def fire_slot(periodic: PeriodicTask, headers: Mapping[str, str], now: datetime) -> datetime:
    """The slot a fire stands for: from the server's ``Nats-Schedule-Next``, else from a
    catch-up fire's ``Celeriac-Catch-Up``; ``ValueError`` naming the header at fault."""
    header = HDR_SCHEDULE_NEXT if HDR_SCHEDULE_NEXT in headers else HDR_CATCH_UP
    value = headers.get(header)
    if value is None:
        raise ValueError(f"no {HDR_SCHEDULE_NEXT} header (nor {HDR_CATCH_UP})")
    if len(value) > _MAX_NEXT_CHARS:
        raise ValueError(f"{header}: not an RFC 3339 time: {value[:_MAX_NEXT_CHARS]!r}...")
    try:
        moment = parse_schedule_next(value)
    except ValueError:
        raise ValueError(f"{header}: not an RFC 3339 time: {value!r}") from None
    if header == HDR_SCHEDULE_NEXT:
        return slot_of(periodic.cron, periodic.every, periodic.time_zone, moment)
    return catch_up_slot(periodic, moment, now)


def catch_up_slot(periodic: PeriodicTask, slot: datetime, now: datetime) -> datetime:
    """The slot a catch-up fire names, if it may stand for one: a slot of the schedule
    (any time for ``every``, which has no fixed phase), not in the future."""
    slot = _utc(slot)
    if slot > now + CATCH_UP_LEEWAY:
        raise ValueError(f"{HDR_CATCH_UP}: {_show(slot)} is in the future")
    if periodic.every is None and latest_slot(periodic, slot, None) != slot:
        raise ValueError(f"{HDR_CATCH_UP}: {_show(slot)} is not a slot of the schedule")
    return slot


# Pure decisions -----------------------------------------------------------------------------


def already_handled(state: ScheduleState | None, slot: datetime) -> bool:
    """True when ``slot`` is not after the last slot handled: a second fire of it."""
    return state is not None and state.last_slot is not None and slot <= _utc(state.last_slot)


def previous_blocks(previous: TaskState | None, deadline: datetime | None, now: datetime) -> bool:
    """True when the previous run is unfinished and still counts as such.

    ``previous`` is its recorded state (None: nothing recorded yet); ``deadline`` is
    the last moment it could start (its slot plus its window; None: unknown). A final
    run never blocks. A running one does, unless its record is a day older than its
    deadline could explain. One not running (pending, waiting for a retry) blocks only
    while it can still start: past the deadline a worker records it REVOKED, expired,
    so a run that expired unstarted never holds the schedule for good.
    """
    if previous is not None and previous.ready:
        return False
    if deadline is None:
        return previous is TaskState.STARTED
    if previous is TaskState.STARTED:
        return now < deadline + STALE_STARTED
    return now < deadline


def after_run(state: ScheduleState | None, fire: Fire) -> ScheduleState | None:
    """The state once ``fire``'s run is enqueued; None when the state already counts it."""
    if state is None:
        return ScheduleState(last_slot=fire.slot, last_run=fire.run, runs=1)
    if state.last_slot is not None and fire.slot <= _utc(state.last_slot):
        if fire.slot == _utc(state.last_slot):
            return None  # another worker took a second fire of this slot at the same time
        # A later slot was written first: this run is enqueued all the same.
        return state.model_copy(update={"runs": state.runs + 1})
    return state.model_copy(
        update={"last_slot": fire.slot, "last_run": fire.run, "runs": state.runs + 1}
    )


def after_skip(state: ScheduleState | None, fire: Fire, reason: str) -> ScheduleState | None:
    """The state once ``fire``'s slot is skipped; None when the slot was handled already."""
    if already_handled(state, fire.slot):
        return None
    base = state or ScheduleState()
    return base.model_copy(
        update={"last_slot": fire.slot, "skips": base.skips + 1, "last_skip_reason": reason}
    )


def run_message(fire: Fire) -> TaskMessage:
    """The ordinary task that runs ``fire``'s slot; it may start until the slot's window ends."""
    periodic = fire.periodic
    return TaskMessage(
        id=fire.run,
        task=periodic.task,
        args=periodic.args,
        kwargs=periodic.kwargs,
        queue=periodic.queue,
        expires=fire.slot + run_window(periodic, fire.slot),
        headers=periodic.headers,
    )


def jitter_delay(periodic: PeriodicTask, rng: random.Random) -> float | None:
    """Seconds to delay the run by (uniform up to ``jitter``), or None for no delay."""
    if periodic.jitter <= 0:
        return None
    return rng.uniform(0, periodic.jitter)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _show(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# Schedule state -----------------------------------------------------------------------------


class StateConflictError(Exception):
    """Other writers changed a schedule's state at every attempt."""


class ScheduleStates:
    """Schedules' states in the ``celeriac_schedules`` bucket, by revision."""

    def __init__(self, declarer: Declarer) -> None:
        self._declarer = declarer
        self._kv: KeyValue | None = None

    async def kv(self) -> KeyValue:
        """The schedules bucket (created when missing and declaring is on)."""
        if self._kv is None:
            self._kv = await self._declarer.bucket(
                names.SCHEDULES_BUCKET, ttl=jetstream.SCHEDULES_TTL_SECONDS
            )
        return self._kv

    async def read(self, name: str) -> tuple[ScheduleState | None, int]:
        """The state of schedule ``name`` and its revision (0: none stored)."""
        kv = await self.kv()
        try:
            entry = await kv.get(name)
        except KeyNotFoundError:
            return None, 0
        revision = entry.revision or 0
        try:
            return ScheduleState.model_validate_json(entry.value or b""), revision
        except ValueError as exc:
            log.warning("schedule %s: its state is unreadable (%s); starting afresh", name, exc)
            return None, revision

    async def write(self, name: str, state: ScheduleState, revision: int) -> bool:
        """Store ``state`` if the key is still at ``revision``; False when it is not."""
        kv = await self.kv()
        try:
            if revision:
                await kv.update(name, state.dumps(), last=revision)
            else:
                await kv.create(name, state.dumps())
        except KeyWrongLastSequenceError:
            return False
        return True

    async def change(
        self,
        name: str,
        change: Callable[[ScheduleState | None], ScheduleState | None],
        state: ScheduleState | None,
        revision: int,
    ) -> bool:
        """Apply ``change`` to the state read at ``revision``, reading again on a conflict.

        ``change`` returning None means nothing to write (another fire of the same slot
        was counted meanwhile): False then, True once the change is written.
        """
        for _ in range(STATE_ATTEMPTS):
            changed = change(state)
            if changed is None:
                return False
            if await self.write(name, changed, revision):
                return True
            state, revision = await self.read(name)
        raise StateConflictError(
            f"the state of schedule {name!r} changed at each of {STATE_ATTEMPTS} attempts"
        )


# Handling a fire ----------------------------------------------------------------------------


class Fires:
    """Handles the fires of a worker's queues: enqueue a run, skip, or drop a second fire."""

    def __init__(self, broker: Broker, rng: random.Random) -> None:
        self._broker = broker
        self._rng = rng
        self.states = ScheduleStates(broker.declarer)

    async def handle(self, delivery: Delivery, fire: Fire) -> None:
        """Settle ``fire``: ack once handled, NAK with a delay when NATS failed us."""
        try:
            with firing(delivery.queue, fire.periodic, fire.slot, fire.run):
                line = await self.fire(fire)
        except Exception as exc:
            log.error(
                "schedule %s slot %s not handled (%r); firing again in %gs",
                fire.periodic.name, _show(fire.slot), exc, FIRE_RETRY_DELAY,
            )  # fmt: skip
            try:
                await delivery.nak(FIRE_RETRY_DELAY)
            except Exception as nak_exc:
                log.error("could not NAK (%r); the fire returns after ack_wait", nak_exc)
            return
        log.info("%s", line)
        await delivery.ack()

    async def fire(self, fire: Fire) -> str:
        """Do what ``fire`` calls for (raising when NATS fails); the line to log about it."""
        periodic = fire.periodic
        head = f"schedule {periodic.name} slot {_show(fire.slot)}"
        state, revision = await self.states.read(periodic.name)
        if already_handled(state, fire.slot):
            assert state is not None and state.last_slot is not None
            last = _utc(state.last_slot)
            if fire.slot == last:
                return f"{head}: handled already (last slot {_show(last)}); nothing enqueued"
            # A fire back after a failure (NAKed) or long queued, once a later slot ran:
            # missed slots collapse into the latest run, which stands for this one too.
            return (
                f"{head}: handled already: older than the last slot handled ({_show(last)}), "
                "whose run stands for it; nothing enqueued"
            )
        blocking = await self._blocking(periodic, state)
        if blocking is not None and periodic.concurrency_policy is ConcurrencyPolicy.FORBID:
            return await self._skip(head, fire, blocking, state, revision)
        note = ""
        if blocking is not None:  # Replace
            previous, previous_state = blocking
            await self._broker.revocations.revoke(previous, f"replaced by {fire.run}")
            note = f" (revoked the unfinished previous run {previous}, {previous_state.value})"
        return await self._run(head, fire, state, revision) + note

    async def _run(self, head: str, fire: Fire, state: ScheduleState | None, revision: int) -> str:
        """Enqueue the slot's run, then count it."""
        delay = jitter_delay(fire.periodic, self._rng)
        await self._broker.publish_task(run_message(fire), countdown=delay)
        record = partial(after_run, fire=fire)
        if not await self.states.change(fire.periodic.name, record, state, revision):
            return f"{head}: handled already by another fire of it (the same run id); not counted"
        later = f" in {delay:.1f}s" if delay is not None else ""
        return f"{head} -> task {fire.run}{later}"

    async def _skip(
        self,
        head: str,
        fire: Fire,
        blocking: tuple[str, TaskState],
        state: ScheduleState | None,
        revision: int,
    ) -> str:
        """Forbid: count the slot as skipped, naming the run that holds it."""
        previous, previous_state = blocking
        reason = f"previous run {previous} is {previous_state.value}, unfinished"
        skip = partial(after_skip, fire=fire, reason=reason)
        if not await self.states.change(fire.periodic.name, skip, state, revision):
            return f"{head}: handled already by another fire of it; nothing enqueued"
        return f"{head} skipped: {reason}"

    async def _blocking(
        self, periodic: PeriodicTask, state: ScheduleState | None
    ) -> tuple[str, TaskState] | None:
        """The previous run and its state when the policy must act on it, else None."""
        if periodic.concurrency_policy is ConcurrencyPolicy.ALLOW:
            return None
        if state is None or state.last_run is None:
            return None
        previous = await self._recorded_state(state.last_run)
        deadline = None
        if state.last_slot is not None:
            last_slot = _utc(state.last_slot)
            deadline = last_slot + run_window(periodic, last_slot)
        if not previous_blocks(previous, deadline, datetime.now(UTC)):
            return None
        return state.last_run, previous or TaskState.PENDING

    async def _recorded_state(self, task_id: str) -> TaskState | None:
        """The state recorded for ``task_id``; None when nothing (readable) is stored."""
        try:
            record = await self._broker.results.get(task_id)
        except ValueError as exc:
            log.warning("the result record of %s is unreadable (%s)", task_id, exc)
            return None
        return record.state if record is not None else None
