"""Schedules stored in JetStream: store, read, list, suspend, resume and delete them.

The definitions and messages are ``celeriac.periodic``'s; this module is where they
meet a JetStream context, so the SDK (``celeriac.schedules``, the CLI) and the
operator (TaskSchedule resources) keep schedules the same way. A schedule is found
by its subject in the work streams, its state in the ``celeriac_schedules`` bucket.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import APIError, BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from celeriac import cron
from celeriac.exceptions import CeleriacError, ScheduleNotSupported
from celeriac.periodic import (
    catch_up_message,
    is_suspended,
    pattern,
    schedule_message,
    schedule_signature,
    suspended_message,
)
from celeriac.protocol import names
from celeriac.protocol.envelope import ResultRecord
from celeriac.protocol.periodic import (
    PeriodicTask,
    ScheduleState,
    check_schedule_name,
    schedule_subject,
)
from celeriac.protocol.signing import HDR_SIGNATURE, SigningKeys
from celeriac.protocol.states import TaskState
from celeriac.streams import work_queues

log = logging.getLogger(__name__)

STORE_TIMEOUT = 10.0  # seconds JetStream has to acknowledge a schedule message

# JetStream error codes of a refused schedule message.
_SCHEDULES_DISABLED = 10188
_PATTERN_INVALID = 10189
_TARGET_INVALID = 10190
_TTL_INVALID = 10191
_TTL_DISABLED = 10166
_TIME_ZONE_INVALID = 10223


class ScheduleNotFoundError(CeleriacError):
    """No schedule of that name (on that queue)."""


class AmbiguousScheduleError(CeleriacError):
    """Schedules of that name exist on several queues; name the queue."""


class Change(StrEnum):
    """What publishing a definition did to the schedule stored on the server."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SUSPENDED = "updated, still suspended"  # the definition changed; it stays suspended
    DELETED = "deleted"


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as stored on the server, with what the workers recorded of it."""

    periodic: PeriodicTask
    suspended: bool
    next_fire: datetime | None  # None while suspended
    state: ScheduleState | None  # None until a worker has handled a fire
    stored_at: datetime | None = None  # when the schedule message was written
    # Its Celeriac-Signature, kept through suspend and resume and put on catch-up fires.
    signature: str | None = None

    @property
    def name(self) -> str:
        return self.periodic.name

    @property
    def queue(self) -> str:
        return self.periodic.queue

    @property
    def schedule(self) -> str:
        """The ``Nats-Schedule`` pattern: a 6-field cron, a macro, or ``@every <n>s``."""
        try:
            return pattern(self.periodic)
        except ValueError:  # written by something else than the SDK
            return self.periodic.cron or f"@every {self.periodic.every}s"

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready summary (``celeriac schedule list -o json``)."""
        p, state = self.periodic, self.state
        return {
            "name": p.name,
            "queue": p.queue,
            "task": p.task,
            "schedule": self.schedule,
            "cron": p.cron,
            "every": p.every,
            "time_zone": p.time_zone if p.cron is not None else None,
            "args": p.args,
            "kwargs": p.kwargs,
            "concurrency_policy": p.concurrency_policy.value,
            "expires": p.expires,
            "jitter": p.jitter,
            "suspended": self.suspended,
            "next_fire": _iso(self.next_fire),
            "last_slot": _iso(state.last_slot) if state else None,
            "last_run": state.last_run if state else None,
            "runs": state.runs if state else 0,
            "skips": state.skips if state else 0,
        }


# Pure: definitions ----------------------------------------------------------------------------


def _same(stored: RawStreamMsg, wanted: dict[str, str], payload: bytes) -> bool:
    """True when the stored message already is this one (server-added headers aside)."""
    headers = stored.headers or {}
    if stored.data != payload:
        return False
    if any(headers.get(key) != value for key, value in wanted.items()):
        return False
    ours = {k for k in headers if k.startswith(("Nats-Schedule", "Celeriac-"))}
    return ours <= set(wanted)


# On JetStream ------------------------------------------------------------------------------


async def store(
    js: JetStreamContext,
    p: PeriodicTask,
    *,
    suspend: bool | None = None,
    keys: SigningKeys | None = None,
) -> Change:
    """Store ``p`` as its queue's schedule; the queue's stream must exist.

    A schedule already stored as given is left alone, so storing it again does not
    restart an ``every`` schedule's phase. ``suspend`` None keeps a stored schedule
    suspended or active as it is (a new one is active); True or False sets it. With
    ``keys`` it is signed, so its fires verify on workers that check signatures.
    """
    stored = await _last(js, p.queue, p.name)
    was_suspended = stored is not None and is_suspended(stored.headers)
    signature = schedule_signature(p, keys) if keys is not None else None
    if suspend if suspend is not None else was_suspended:
        _, headers, payload = suspended_message(p, signature)
        if stored is not None and _same(stored, headers, payload):
            return Change.UNCHANGED
        await _store_plain(js, p, headers, payload)
        if stored is None:
            return Change.CREATED
        return Change.SUSPENDED if was_suspended else Change.UPDATED
    subject, headers, payload = schedule_message(p, signature)
    if stored is not None and _same(stored, headers, payload):
        return Change.UNCHANGED
    await _publish(js, p, subject, headers, payload)
    return Change.CREATED if stored is None else Change.UPDATED


async def _publish(
    js: JetStreamContext, p: PeriodicTask, subject: str, headers: dict[str, str], payload: bytes
) -> None:
    try:
        await js.publish(subject, payload, timeout=STORE_TIMEOUT, headers=headers)
    except APIError as exc:
        raise _refusal(p, headers, exc) from exc


def _refusal(p: PeriodicTask, headers: dict[str, str], exc: APIError) -> CeleriacError:
    """A refused schedule message, in words."""
    stream = names.stream_name(p.queue)
    what = f"nats-server refused periodic task {p.name!r}"
    code = exc.err_code
    if code == _SCHEDULES_DISABLED:
        return ScheduleNotSupported(
            f"{what}: stream {stream} does not allow message schedules (allow_msg_schedules)"
        )
    if code == _PATTERN_INVALID:
        return ScheduleNotSupported(
            f"{what}: it does not take the schedule {headers.get(names.HDR_SCHEDULE)!r} "
            "(recurring schedules need nats-server 2.14 or newer)"
        )
    if code == _TIME_ZONE_INVALID:
        return CeleriacError(f"{what}: it does not know the time zone {p.time_zone!r}")
    if code == _TTL_DISABLED:
        return ScheduleNotSupported(
            f"{what}: stream {stream} does not allow per-message TTLs (allow_msg_ttl)"
        )
    if code in (_TTL_INVALID, _TARGET_INVALID):
        return CeleriacError(f"{what}: {exc.description}")
    return CeleriacError(f"{what}: {exc.description} (error {code})")


async def _store_plain(
    js: JetStreamContext, p: PeriodicTask, headers: dict[str, str], payload: bytes
) -> None:
    """Store ``p`` as a plain message, then drop everything older on its subject.

    Written first and purged second, the definition is on the server at every moment.
    The plain message stops the schedule at once; the purge removes it for good.
    """
    await _publish(js, p, p.subject, headers, payload)
    await js.purge_stream(names.stream_name(p.queue), subject=p.subject, keep=1)


async def _last(js: JetStreamContext, queue: str, name: str) -> RawStreamMsg | None:
    """The message stored for schedule ``name`` of ``queue``, if any."""
    try:
        return await js.get_last_msg(names.stream_name(queue), schedule_subject(queue, name))
    except NotFoundError:  # no such message, or no such stream
        return None


async def schedule_names(js: JetStreamContext, queue: str) -> list[str]:
    """The names of the schedules stored on ``queue`` (none when it has no stream)."""
    prefix = schedule_subject(queue, "x")[:-1]
    try:
        info = await js.stream_info(names.stream_name(queue), subjects_filter=f"{prefix}>")
    except NotFoundError:
        return []
    return sorted(subject[len(prefix) :] for subject in info.state.subjects or {})


async def _state_bucket(js: JetStreamContext) -> KeyValue | None:
    try:
        return await js.key_value(names.SCHEDULES_BUCKET)
    except BucketNotFoundError:
        return None


async def _state(bucket: KeyValue | None, name: str) -> ScheduleState | None:
    if bucket is None:
        return None
    try:
        entry = await bucket.get(name)
    except KeyNotFoundError:  # also a deleted key
        return None
    try:
        return ScheduleState.model_validate_json(entry.value or b"")
    except ValidationError:
        log.warning("ignoring an unreadable state of schedule %r", name)
        return None


def _info(msg: RawStreamMsg, state: ScheduleState | None, now: datetime) -> ScheduleInfo | None:
    """The schedule a stored message holds (None for a message that is no definition)."""
    try:
        p = PeriodicTask.model_validate_json(msg.data or b"")
    except ValidationError:
        log.warning("ignoring an unreadable schedule message on %s", msg.subject)
        return None
    suspended = is_suspended(msg.headers)
    try:
        upcoming = None if suspended else _next_fire(p, state, msg.time, now)
    except ValueError:  # a cron or zone this SDK cannot evaluate
        upcoming = None
    signature = (msg.headers or {}).get(HDR_SIGNATURE)
    return ScheduleInfo(p, suspended, upcoming, state, msg.time, signature)


def _next_fire(
    p: PeriodicTask, state: ScheduleState | None, stored_at: datetime | None, now: datetime
) -> datetime:
    if p.every is None:
        return cron.next_fire(p.cron, None, p.time_zone, now)
    # ``every`` runs from the last fire, or from when the schedule was written (the
    # server's first fire is that time rounded to the second plus the interval).
    anchor = state.last_slot if state is not None and state.last_slot is not None else stored_at
    if anchor is None:
        return cron.next_fire(None, p.every, "UTC", now)
    anchor = anchor.astimezone(UTC).replace(microsecond=0) + timedelta(
        seconds=1 if anchor.microsecond >= 500_000 else 0
    )
    steps = max(1, math.floor((now - anchor).total_seconds() / p.every) + 1)
    return anchor + timedelta(seconds=steps * p.every)


async def list_schedules(
    js: JetStreamContext, queues: Iterable[str] | None = None, *, name: str | None = None
) -> list[ScheduleInfo]:
    """The schedules on ``queues`` (default: every queue), sorted by queue and name.

    ``name`` keeps only the schedules of that name.
    """
    chosen = sorted(set(queues)) if queues is not None else await work_queues(js)
    bucket = await _state_bucket(js)
    now = datetime.now(UTC)
    found: list[ScheduleInfo] = []
    for queue in chosen:
        if name is not None:
            candidates = [name]
        else:
            candidates = await schedule_names(js, names.check_queue_name(queue))
        for candidate in candidates:
            msg = await _last(js, queue, candidate)
            if msg is None:
                continue
            info = _info(msg, await _state(bucket, candidate), now)
            if info is not None:
                found.append(info)
    return found


async def find_schedule(js: JetStreamContext, name: str, queue: str | None = None) -> ScheduleInfo:
    """The schedule ``name`` (on ``queue``, or on whichever queue holds it).

    Raises ``ScheduleNotFoundError``, or ``AmbiguousScheduleError`` when several queues
    hold one and ``queue`` is not given.
    """
    check_schedule_name(name)
    queues = [names.check_queue_name(queue)] if queue is not None else None
    found = await list_schedules(js, queues, name=name)
    where = f" on queue {queue!r}" if queue is not None else ""
    if not found:
        raise ScheduleNotFoundError(f"unknown schedule {name!r}{where}")
    if len(found) > 1:
        queue_list = ", ".join(info.queue for info in found)
        raise AmbiguousScheduleError(
            f"schedule {name!r} exists on several queues ({queue_list}); choose one with -Q"
        )
    return found[0]


async def delete_schedule(js: JetStreamContext, queue: str, name: str) -> None:
    """Remove schedule ``name`` of ``queue`` (active or suspended) for good."""
    if await _last(js, queue, name) is None:
        raise ScheduleNotFoundError(f"unknown schedule {name!r} on queue {queue!r}")
    await js.purge_stream(names.stream_name(queue), subject=schedule_subject(queue, name))


async def suspend_schedule(js: JetStreamContext, queue: str, name: str) -> bool:
    """Stop schedule ``name`` of ``queue`` firing, keeping its definition.

    Returns False when it was suspended already.
    """
    info = await find_schedule(js, name, queue)
    if info.suspended:
        return False
    _, headers, payload = suspended_message(info.periodic, info.signature)
    await _store_plain(js, info.periodic, headers, payload)
    return True


async def resume_schedule(js: JetStreamContext, queue: str, name: str) -> bool:
    """Make a suspended schedule fire again, from its stored definition.

    Returns False when it was not suspended. Its schedule message replaces the plain
    one (the server rolls the subject up).
    """
    info = await find_schedule(js, name, queue)
    if not info.suspended:
        return False
    subject, headers, payload = schedule_message(info.periodic, info.signature)
    await _publish(js, info.periodic, subject, headers, payload)
    return True


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def run_state(js: JetStreamContext, task_id: str) -> TaskState | None:
    """The state recorded for run ``task_id`` in the results bucket; None when nothing
    (readable) is stored: the run is waiting in its queue, or its result expired."""
    try:
        entry = await (await js.key_value(names.RESULTS_BUCKET)).get(task_id)
    except (BucketNotFoundError, KeyNotFoundError):
        return None
    try:
        return ResultRecord.model_validate_json(entry.value or b"").state
    except ValidationError:
        return None


async def request_catch_up(
    js: JetStreamContext, p: PeriodicTask, slot: datetime, signature: str | None = None
) -> None:
    """Ask the workers for ``slot``'s run (see ``celeriac.periodic.missed_slot``), with
    the stored schedule's ``signature`` (``ScheduleInfo.signature``)."""
    subject, headers, payload = catch_up_message(p, slot, signature)
    await js.publish(subject, payload, timeout=STORE_TIMEOUT, headers=headers)
