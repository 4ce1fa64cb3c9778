"""kopf handlers for TaskQueue: JetStream objects, live backlog numbers, deletion policy.

Conditions: ``Ready`` (the queue's streams and consumer exist) and ``Synced``
(they match the spec; when JetStream cannot change something the message says what).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import kopf
import nats.errors
import nats.js.errors
from pydantic import ValidationError

from celeriac.operator import queues
from celeriac.operator.connections import NatsConnections
from celeriac.operator.kube import Events, StatusWriter
from celeriac.operator.polling import poll_until_stopped
from celeriac.operator.status import condition, status_update, write_status
from celeriac.protocol import names
from celeriac.protocol.resources import GROUP, VERSION, TaskQueueSpec

RESOURCE = (GROUP, VERSION, "taskqueues")
STATUS_INTERVAL = 5.0
# Errors that mean NATS is unreachable right now: retry later, do not give up.
NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)


def parse_spec(body: Mapping[str, Any]) -> tuple[TaskQueueSpec, str]:
    """The spec and the queue name of a TaskQueue body; ValueError when invalid."""
    try:
        spec = TaskQueueSpec.model_validate(dict(body.get("spec") or {}))
    except ValidationError as exc:
        raise ValueError(str(exc)) from None
    return spec, spec.queue_name(body["metadata"]["name"])


def _stats_status(stats: queues.QueueStats) -> dict[str, Any]:
    return {
        "backlog": stats.pending,
        "inFlight": stats.ack_pending,
        "redelivered": stats.redelivered,
        "deadLetters": stats.dead_letters,
    }


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
async def reconcile_queue(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Create or update the queue's streams and consumer to match the spec."""
    generation = body["metadata"].get("generation")
    try:
        spec, queue = parse_spec(body)
    except ValueError as exc:
        bad = condition("Ready", False, "InvalidSpec", str(exc), generation=generation)
        write_status(patch.status, status, {"observedGeneration": generation}, [bad])
        raise kopf.PermanentError(f"invalid TaskQueue: {exc}") from None
    connections: NatsConnections = memo.nats
    try:
        js = await connections.jetstream(spec.nats.url if spec.nats else None)
        report = await queues.ensure_queue(js, queue, spec.to_queue_settings())
        stats = await queues.queue_stats(js, queue)
    except NATS_ERRORS as exc:
        down = condition("Ready", False, "NatsUnavailable", f"NATS: {exc!r}", generation=generation)
        write_status(patch.status, status, {}, [down])
        raise kopf.TemporaryError(f"NATS unavailable: {exc!r}", delay=5) from None
    await _report_events(memo.events, body, report)
    fields = {
        "observedGeneration": generation,
        "queue": queue,
        "stream": names.stream_name(queue),
        "deadLetterStream": names.dead_letter_stream_name(queue),
        "consumer": names.CONSUMER_NAME,
        **_stats_status(stats),
    }
    synced = condition(
        "Synced",
        not report.problems,
        "ImmutableSetting" if report.problems else "Synced",
        "; ".join(report.problems) or "JetStream matches the spec",
        generation=generation,
    )
    ready = condition("Ready", True, "QueueReady", f"queue {queue} is ready", generation=generation)
    write_status(patch.status, status, fields, [ready, synced])


async def _report_events(events: Events, body: kopf.Body, report: queues.QueueReport) -> None:
    if report.created:
        await events.post(body, "Created", "created " + ", ".join(report.created))
    if report.updated:
        await events.post(body, "Updated", "updated " + ", ".join(report.updated))
    for problem in report.problems:
        await events.post(body, "CannotUpdate", problem, "Warning")


@kopf.daemon(*RESOURCE, initial_delay=STATUS_INTERVAL, cancellation_timeout=5.0)
async def watch_queue(
    body: kopf.Body,
    status: kopf.Status,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    logger: Any,
    **_: Any,
) -> None:
    """Refresh the queue's status every STATUS_INTERVAL until it is deleted or we stop.

    ``body`` and ``status`` are kept current by kopf.
    """

    async def refresh() -> float:
        await refresh_queue_status(body, status, memo)
        return STATUS_INTERVAL

    await poll_until_stopped(
        stopped, logger, "refreshing the status", refresh, retry_after=STATUS_INTERVAL
    )


async def refresh_queue_status(body: kopf.Body, status: kopf.Status, memo: kopf.Memo) -> None:
    """Keep the backlog numbers in the status fresh; recreate objects deleted behind our back."""
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return
    try:
        spec, queue = parse_spec(body)
    except ValueError:
        return
    connections: NatsConnections = memo.nats
    try:
        js = await connections.jetstream(spec.nats.url if spec.nats else None)
        try:
            stats = await queues.queue_stats(js, queue)
        except nats.js.errors.NotFoundError:
            report = await queues.ensure_queue(js, queue, spec.to_queue_settings())
            await _report_events(memo.events, body, report)
            stats = await queues.queue_stats(js, queue)
    except NATS_ERRORS as exc:
        fields, conditions = {}, [condition("Ready", False, "NatsUnavailable", f"NATS: {exc!r}")]
    else:
        # The same condition the change handler wrote (generation included): no patch
        # unless something really changed.
        ready = condition(
            "Ready",
            True,
            "QueueReady",
            f"queue {queue} is ready",
            generation=meta.get("generation"),
        )
        fields, conditions = _stats_status(stats), [ready]
    changes = status_update(status, fields, conditions, time.time())
    if changes:
        writer: StatusWriter = memo.status_writer
        await writer.patch(RESOURCE[2], meta["namespace"], meta["name"], changes)


@kopf.on.delete(*RESOURCE)
async def delete_queue(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Honour spec.deletionPolicy: Retain keeps the streams and tasks, Delete removes them."""
    try:
        spec, queue = parse_spec(body)
    except ValueError:
        logger.warning("invalid TaskQueue deleted; nothing removed from JetStream")
        return
    if spec.deletion_policy != "Delete":
        logger.info(f"deletionPolicy Retain: keeping the streams of queue {queue}")
        return
    connections: NatsConnections = memo.nats
    try:
        js = await connections.jetstream(spec.nats.url if spec.nats else None)
        deleted = await queues.delete_queue(js, queue)
    except NATS_ERRORS as exc:
        raise kopf.TemporaryError(f"cannot delete queue {queue}: NATS: {exc!r}", delay=5) from None
    logger.info(f"deletionPolicy Delete: removed {', '.join(deleted) or 'nothing (already gone)'}")
