"""kopf handlers for TaskSchedule: the schedule nats-server holds, kept in step with the spec.

The operator only writes the schedule (``celeriac.schedulestore``, as ``celeriac
schedule sync`` does) under the name ``<namespace>.<name>``; the server fires it and
the workers turn each fire into one run. While the operator is down the schedule
keeps firing. A daemon per TaskSchedule refreshes its status from what the workers
recorded (``celeriac_schedules`` bucket) and the last run's result, puts the schedule
back when it was removed behind our back, and asks the workers for one catch-up run
when a slot went by without one (a single nats-server killed over it fires nothing).

Conditions: ``Ready`` (the schedule is stored as the spec says; reason ``Scheduled``
or ``Suspended``, else why not).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError
from pydantic import ValidationError

from celeriac import periodic, schedulestore
from celeriac.exceptions import CeleriacError, NatsRefusedError
from celeriac.operator.connections import NatsConnections
from celeriac.operator.kube import Events, StatusWriter
from celeriac.operator.metrics import counted
from celeriac.operator.polling import poll_until_stopped
from celeriac.operator.status import condition, invalid_spec, status_update, write_status
from celeriac.operator.taskqueues import NATS_ERRORS, nats_trouble
from celeriac.protocol import names
from celeriac.protocol.kubeschema import parse_duration
from celeriac.protocol.periodic import PeriodicTask
from celeriac.protocol.resources import GROUP, VERSION, TaskScheduleSpec
from celeriac.protocol.signing import SigningKeyError, SigningKeys, keys_from_env
from celeriac.protocol.states import TaskState

RESOURCE = (GROUP, VERSION, "taskschedules")
STATUS_INTERVAL = 5.0
# Attempts at removing a deleted TaskSchedule's schedule while NATS is unreachable,
# DELETE_RETRY_DELAY apart; then the resource goes and an Event says what is left.
DELETE_ATTEMPTS = 30
DELETE_RETRY_DELAY = 10.0
QUEUE_MISSING_DELAY = 10.0

# ``celeriac.periodic.define`` names its arguments; a TaskSchedule names spec fields.
_FIELDS = {
    "tz": "spec.timeZone",
    "expires": "spec.startingDeadline",
    "jitter": "spec.jitter",
    "concurrency_policy": "spec.concurrencyPolicy",
    "name": "metadata.name",
}


class QueueMissingError(Exception):
    """The task's queue has no stream: no TaskQueue declares it (yet)."""


def schedule_name(namespace: str, name: str) -> str:
    """The server-side name of TaskSchedule ``namespace/name``."""
    return f"{namespace}.{name}"


def _field_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"spec.{where}: {message}" if where else f"spec: {message}"


def _spec_error(text: str) -> str:
    field, sep, rest = text.partition(": ")
    if sep and field in _FIELDS:
        return f"{_FIELDS[field]}: {rest}"
    if sep and field.startswith("spec."):
        return text
    return f"spec.task: {text}"


def definition(body: Mapping[str, Any]) -> tuple[TaskScheduleSpec, PeriodicTask]:
    """The spec of a TaskSchedule body and the schedule it defines; ValueError naming
    the field at fault (the API server checks the fields' shape, this the whole)."""
    meta = body["metadata"]
    try:
        spec = TaskScheduleSpec.model_validate(dict(body.get("spec") or {}))
    except ValidationError as exc:
        raise ValueError(_field_error(exc)) from None
    try:
        p = periodic.define(
            name=schedule_name(meta["namespace"], meta["name"]),
            task=spec.task.name,
            queue=spec.task.queue,
            cron_text=spec.cron,
            every=spec.every,
            tz=spec.time_zone,
            args=spec.task.args,
            kwargs=spec.task.kwargs,
            policy=spec.concurrency_policy,
            expires=parse_duration(spec.starting_deadline) if spec.starting_deadline else None,
            jitter=parse_duration(spec.jitter),
            headers=spec.task.headers,
            arguments=("spec.cron", "spec.every"),
        )
    except (ValueError, TypeError) as exc:
        raise ValueError(_spec_error(str(exc))) from None
    return spec, p


def _stored_queue(status: Mapping[str, Any] | None) -> str | None:
    """The queue the schedule was last written to, as the status records it."""
    queue = (status or {}).get("queue")
    return queue if isinstance(queue, str) else None


async def _jetstream(memo: kopf.Memo, spec: TaskScheduleSpec) -> JetStreamContext:
    connections: NatsConnections = memo.nats
    return await connections.jetstream(spec.nats.url if spec.nats else None)


async def _require_queue(js: JetStreamContext, queue: str) -> None:
    try:
        await js.stream_info(names.stream_name(queue))
    except NotFoundError:
        raise QueueMissingError(
            f"queue {queue} has no stream {names.stream_name(queue)}: create a TaskQueue "
            "for it; the schedule is written once it exists"
        ) from None


async def store(
    memo: kopf.Memo, spec: TaskScheduleSpec, p: PeriodicTask, old_queue: str | None
) -> tuple[JetStreamContext, schedulestore.Change]:
    """Write the schedule as the spec says (removing it from a queue it moved off)."""
    js = await _jetstream(memo, spec)
    await _require_queue(js, p.queue)
    change = await schedulestore.store(js, p, suspend=spec.suspend, keys=_signing_keys())
    if old_queue and old_queue != p.queue:
        with contextlib.suppress(schedulestore.ScheduleNotFoundError):
            await schedulestore.delete_schedule(js, old_queue, p.name)
    return js, change


def _signing_keys() -> SigningKeys | None:
    """The operator's CELERIAC_SIGNING_KEYS(_FILE), read at each write so a rotated file
    is taken up: schedules are signed with them, so their fires verify on the workers."""
    try:
        return keys_from_env(os.environ)
    except SigningKeyError as exc:
        raise CeleriacError(f"the operator's signing keys: {exc}") from None


def _ready(spec: TaskScheduleSpec, p: PeriodicTask, generation: int | None) -> dict[str, Any]:
    if spec.suspend:
        message = f"suspended: schedule {p.name} is kept on queue {p.queue} and does not fire"
        return condition("Ready", True, "Suspended", message, generation=generation)
    zone = f" ({p.time_zone})" if p.cron is not None else ""
    message = f"nats-server fires {periodic.pattern(p)}{zone} onto queue {p.queue}"
    return condition("Ready", True, "Scheduled", message, generation=generation)


def _trouble(exc: BaseException, memo: kopf.Memo, spec: TaskScheduleSpec) -> tuple[str, str, float]:
    """Condition reason, message and retry delay for a failed attempt at the schedule."""
    if isinstance(exc, QueueMissingError):
        return "QueueMissing", str(exc), QUEUE_MISSING_DELAY
    if isinstance(exc, CeleriacError) and not isinstance(exc, NatsRefusedError):
        # The server refused the schedule message (a refused connection is below).
        return "ScheduleRefused", str(exc), 60.0
    if isinstance(exc, APIError):
        return "JetStreamRefused", f"JetStream: {exc.description} (code {exc.err_code})", 60.0
    connections: NatsConnections = memo.nats
    return nats_trouble(exc, connections.connected(spec.nats.url if spec.nats else None))


_STORE_ERRORS = (QueueMissingError, CeleriacError, APIError, *NATS_ERRORS)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
@counted("TaskSchedule")
async def reconcile_schedule(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Write the server-side schedule to match the spec."""
    generation = body["metadata"].get("generation")
    try:
        spec, p = definition(body)
    except ValueError as exc:
        message = invalid_spec(patch.status, status, generation, "TaskSchedule", exc)
        raise kopf.PermanentError(message) from None
    try:
        change = (await store(memo, spec, p, _stored_queue(status)))[1]
    except _STORE_ERRORS as exc:
        reason, message, delay = _trouble(exc, memo, spec)
        down = condition("Ready", False, reason, message, generation=generation)
        write_status(patch.status, status, {"observedGeneration": generation}, [down])
        raise kopf.TemporaryError(message, delay=delay) from None
    if change is not schedulestore.Change.UNCHANGED:
        events: Events = memo.events
        await events.post(body, "Scheduled", f"schedule {p.name} {change.value}")
    fields = {
        "observedGeneration": generation,
        "schedule": periodic.pattern(p),
        "queue": p.queue,
    }
    write_status(patch.status, status, fields, [_ready(spec, p, generation)])


@kopf.daemon(*RESOURCE, initial_delay=STATUS_INTERVAL, cancellation_timeout=5.0)
async def watch_schedule(
    body: kopf.Body,
    status: kopf.Status,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    logger: Any,
    **_: Any,
) -> None:
    """Refresh the status every STATUS_INTERVAL until the TaskSchedule goes or we stop."""
    requested: set[str] = set()  # catch-up runs asked for, so each is asked (and told) once

    async def refresh() -> float:
        return await refresh_schedule_status(body, status, memo, logger, requested)

    refresh_counted = memo.metrics.counting_errors("TaskSchedule", refresh)
    await poll_until_stopped(
        stopped, logger, "refreshing the status", refresh_counted, retry_after=STATUS_INTERVAL
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def schedule_status(info: schedulestore.ScheduleInfo, last: TaskState | None) -> dict[str, Any]:
    """The status fields reporting ``info``; ``last`` is the last run's recorded state."""
    state = info.state
    last_run = None
    if state is not None and state.last_run is not None:
        last_run = {"id": state.last_run, "state": (last or TaskState.PENDING).value}
    return {
        "lastScheduleTime": _iso(state.last_slot if state else None),
        "lastRun": last_run,
        "nextScheduleTime": _iso(info.next_fire),
        "runs": state.runs if state else 0,
        "skips": state.skips if state else 0,
        "lastSkipReason": state.last_skip_reason if state else None,
    }


async def refresh_schedule_status(
    body: kopf.Body, status: kopf.Status, memo: kopf.Memo, logger: Any, requested: set[str]
) -> float:
    """Keep the schedule stored and the status current; ask for a missed slot's run.
    Returns the seconds until the next refresh."""
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return STATUS_INTERVAL
    try:
        spec, p = definition(body)
    except ValueError:
        return STATUS_INTERVAL  # reported by the change handler
    generation = meta.get("generation")
    delay = STATUS_INTERVAL
    fields: dict[str, Any] = {}
    try:
        js, change = await store(memo, spec, p, _stored_queue(status))
        if change is schedulestore.Change.CREATED:
            message = f"schedule {p.name} was missing on the server; written again"
            await memo.events.post(body, "Restored", message, "Warning")
        info = await schedulestore.find_schedule(js, p.name, p.queue)
        try:
            await _catch_up(js, body, memo, logger, info, requested=requested)
        except Exception as exc:  # the status is worth writing all the same
            logger.warning(f"could not look for a missed slot of {p.name}: {exc!r}")
        last_run = info.state.last_run if info.state else None
        last = await schedulestore.run_state(js, last_run) if last_run else None
        fields = schedule_status(info, last)
        conditions = [_ready(spec, p, generation)]
    except (*_STORE_ERRORS, schedulestore.ScheduleNotFoundError) as exc:
        reason, message, delay = _trouble(exc, memo, spec)
        conditions = [condition("Ready", False, reason, message)]
    changes = status_update(status, fields, conditions, time.time())
    if changes:
        writer: StatusWriter = memo.status_writer
        await writer.patch(RESOURCE[2], meta["namespace"], meta["name"], changes)
    return delay


async def _catch_up(
    js: JetStreamContext,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: Any,
    info: schedulestore.ScheduleInfo,
    *,
    requested: set[str],
) -> None:
    """Ask the workers for the run of a slot that went by without one (at most once)."""
    if info.suspended:
        return
    slot = periodic.missed_slot(info.periodic, info.state, info.stored_at, datetime.now(UTC))
    if slot is None:
        return
    key = _iso(slot) or ""
    if key in requested:
        return
    await schedulestore.request_catch_up(js, info.periodic, slot, info.signature)
    requested.add(key)
    message = f"slot {key} went by without a run (NATS was down?); asked the workers for one"
    logger.warning(message)
    events: Events = memo.events
    await events.post(body, "CatchUp", message, "Warning")


@kopf.on.delete(*RESOURCE)
async def delete_schedule(
    body: kopf.Body, status: kopf.Status, memo: kopf.Memo, logger: Any, retry: int, **_: Any
) -> None:
    """Remove the server-side schedule; it stops firing."""
    meta = body["metadata"]
    name = schedule_name(meta["namespace"], meta["name"])
    try:
        spec = TaskScheduleSpec.model_validate(dict(body.get("spec") or {}))
    except ValidationError:
        spec = None
    queues = {q for q in (_stored_queue(status), spec.task.queue if spec else None) if q}
    try:
        connections: NatsConnections = memo.nats
        js = await connections.jetstream(spec.nats.url if spec and spec.nats else None)
        for queue in sorted(queues):
            try:
                await schedulestore.delete_schedule(js, queue, name)
            except schedulestore.ScheduleNotFoundError:
                continue
            logger.info(f"deleted schedule {name} of queue {queue}")
    except NATS_ERRORS as exc:
        if retry + 1 < DELETE_ATTEMPTS:
            raise kopf.TemporaryError(f"NATS: {exc!r}", delay=DELETE_RETRY_DELAY) from None
        message = (
            f"could not delete schedule {name} (NATS: {exc!r}); it fires on until removed: "
            f"celeriac schedule delete {name} -Q {' '.join(sorted(queues))} --force"
        )
        logger.error(message)
        await memo.events.post(body, "ScheduleLeft", message, "Warning")
