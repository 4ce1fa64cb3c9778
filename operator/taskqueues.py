"""kopf handlers for TaskQueue: JetStream objects, live backlog numbers, deletion policy.

Conditions: ``Ready`` (the queue's streams and consumer exist) and ``Synced``
(they match the spec; when JetStream cannot change something the message says what).

A queue belongs to one TaskQueue (:mod:`celeriac.operator.claims`). Another
TaskQueue naming it is refused (``Ready=False``, reason ``QueueClaimed``), changes
nothing in JetStream, and tries again on every status refresh: it takes the queue
over once the owner is deleted. Reading a claim and writing it happen under one
lock per queue, so two TaskQueues reconciled at once cannot both claim it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.errors import APIError
from pydantic import ValidationError

from celeriac.exceptions import NatsRefusedError
from celeriac.operator import claims, queues
from celeriac.operator.connections import NatsConnections
from celeriac.operator.kube import Events, StatusWriter
from celeriac.operator.metrics import OperatorMetrics, counted
from celeriac.operator.polling import poll_until_stopped
from celeriac.operator.status import condition, invalid_spec, status_update, write_status
from celeriac.protocol import names
from celeriac.protocol.resources import GROUP, VERSION, TaskQueueSpec

RESOURCE = (GROUP, VERSION, "taskqueues")
STATUS_INTERVAL = 5.0
# Attempts at releasing a Retain queue's claim before its TaskQueue goes anyway.
RELEASE_ATTEMPTS = 6
# Errors that mean NATS is unreachable right now: retry later, do not give up.
NATS_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError, NatsRefusedError)


def nats_trouble(exc: BaseException, connected: bool) -> tuple[str, str, float]:
    """Condition reason, message and retry delay for a failed NATS call.

    A refusal (credentials, TLS) is not an outage: it names what to fix, and is
    retried less often, since only a change of Secret or certificate ends it. A
    timeout while connected is JetStream, not the server: on a cluster, the queue's
    stream or consumer electing a leader, which takes seconds; look again soon.
    """
    if isinstance(exc, NatsRefusedError):
        return "NatsRefused", f"{exc} (the operator's NATS Secret: --nats-auth-dir)", 30.0
    if connected and isinstance(exc, (TimeoutError, nats.errors.TimeoutError)):
        message = (
            "NATS is up but JetStream did not answer in time; on a cluster the queue's "
            "stream or consumer may be electing a leader"
        )
        return "JetStreamNotAnswering", message, 1.0
    return "NatsUnavailable", f"NATS: {exc!r}", 5.0


def parse_spec(body: Mapping[str, Any]) -> tuple[TaskQueueSpec, str]:
    """The spec and the queue name of a TaskQueue body; ValueError when invalid."""
    try:
        spec = TaskQueueSpec.model_validate(dict(body.get("spec") or {}))
    except ValidationError as exc:
        raise ValueError(str(exc)) from None
    return spec, spec.queue_name(body["metadata"]["name"])


def _stats_status(stats: queues.QueueStats | None) -> dict[str, Any]:
    return {
        "backlog": stats.pending if stats else None,
        "inFlight": stats.ack_pending if stats else None,
        "redelivered": stats.redelivered if stats else None,
        "deadLetters": stats.dead_letters if stats else None,
    }


def _queue_status(queue: str, stats: queues.QueueStats | None) -> dict[str, Any]:
    """The status fields naming the queue's objects; None (removed) for a refused queue."""
    owned = stats is not None
    return {
        "queue": queue,
        "stream": names.stream_name(queue) if owned else None,
        "deadLetterStream": names.dead_letter_stream_name(queue) if owned else None,
        "consumer": names.CONSUMER_NAME if owned else None,
        **_stats_status(stats),
    }


def _owner(body: kopf.Body) -> str:
    return claims.owner_of(body["metadata"]["namespace"], body["metadata"]["name"])


class QueueLocks:
    """One lock per queue (and NATS server), shared by every TaskQueue's handlers."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def __call__(self, server: str, queue: str) -> asyncio.Lock:
        return self._locks.setdefault((server, queue), asyncio.Lock())


@kopf.on.startup()
async def make_queue_locks(memo: kopf.Memo, **_: Any) -> None:
    """The claim locks live in the operator-wide memo (object memos are copies of it)."""
    memo.queue_locks = QueueLocks()


@dataclass(frozen=True)
class Outcome:
    """What :func:`sync_queue` found and did.

    ``report`` is None when nothing was reconciled (the queue is someone else's, or
    it is ours and only its numbers were read); ``stats`` is None for a refused queue.
    """

    claim: claims.Claim
    report: queues.QueueReport | None = None
    stats: queues.QueueStats | None = None


async def _open(
    memo: kopf.Memo, spec: TaskQueueSpec, queue: str
) -> tuple[JetStreamContext, asyncio.Lock]:
    """The JetStream context of the queue's NATS, and the queue's claim lock."""
    connections: NatsConnections = memo.nats
    url = spec.nats.url if spec.nats else None
    js = await connections.jetstream(url)
    locks: QueueLocks = memo.queue_locks
    return js, locks(url or connections.default_url, queue)


async def sync_queue(
    memo: kopf.Memo, spec: TaskQueueSpec, queue: str, owner: str, *, refresh: bool = False
) -> Outcome:
    """Check the claim, and if the queue is (or becomes) ``owner``'s, reconcile it.

    With ``refresh`` an owned queue whose objects all exist is only read.
    """
    js, lock = await _open(memo, spec, queue)
    async with lock:
        claim = claims.decide(await queues.claim_metadata(js, queue), owner)
        if claim.verdict is claims.Verdict.CLAIMED:
            return Outcome(claim)
        if refresh and claim.verdict is claims.Verdict.OWNED:
            try:
                return Outcome(claim, None, await queues.queue_stats(js, queue))
            except nats.js.errors.NotFoundError:
                pass  # deleted behind our back: recreate it
        report = await queues.ensure_queue(
            js,
            queue,
            spec.to_queue_settings(),
            owner,
            bucket_replicas=memo.config.bucket_replicas,
            events=memo.config.events_settings(),
            webhook=spec.webhooks.target() if spec.webhooks is not None else None,
        )
        return Outcome(claim, report, await queues.queue_stats(js, queue))


def _owned_conditions(
    queue: str, report: queues.QueueReport, generation: int | None
) -> list[dict[str, Any]]:
    synced = condition(
        "Synced",
        not report.problems,
        "ImmutableSetting" if report.problems else "Synced",
        "; ".join(report.problems) or "JetStream matches the spec",
        generation=generation,
    )
    return [_ready(queue, generation), synced]


def _ready(queue: str, generation: int | None) -> dict[str, Any]:
    return condition("Ready", True, "QueueReady", f"queue {queue} is ready", generation=generation)


async def _refused(
    body: kopf.Body, status: Mapping[str, Any] | None, memo: kopf.Memo, queue: str, owner: str
) -> list[dict[str, Any]]:
    """The conditions of a TaskQueue refused because ``owner`` holds ``queue``.

    A warning Event goes out when the TaskQueue was not refused (for this reason) already.
    """
    generation = body["metadata"].get("generation")
    message = claims.refusal(queue, owner)
    conditions = [
        condition("Ready", False, "QueueClaimed", message, generation=generation),
        condition("Synced", False, "QueueClaimed", message, generation=generation),
    ]
    conditions_before = (status or {}).get("conditions") or []
    before: Mapping[str, Any] = next((c for c in conditions_before if c["type"] == "Ready"), {})
    if (before.get("reason"), before.get("message")) != ("QueueClaimed", message):
        events: Events = memo.events
        await events.post(body, "QueueClaimed", message, "Warning")
    return conditions


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
@counted("TaskQueue")
async def reconcile_queue(
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: Any,
    **_: Any,
) -> None:
    """Create or update the queue's streams and consumer to match the spec.

    A queue that belongs to another TaskQueue is left alone: the status says whose
    it is, and the status refresh tries again (no error, no retry of this handler).
    """
    generation = body["metadata"].get("generation")
    try:
        spec, queue = parse_spec(body)
    except ValueError as exc:
        message = invalid_spec(patch.status, status, generation, "TaskQueue", exc)
        raise kopf.PermanentError(message) from None
    try:
        outcome = await sync_queue(memo, spec, queue, _owner(body))
    except APIError as exc:
        # JetStream answered and said no (e.g. replicas: 3 on a single server): a spec
        # this NATS cannot hold, not an outage. It may fit later (the cluster grows).
        message = f"JetStream refused queue {queue}: {exc.description} (code {exc.err_code})"
        refused = condition("Ready", False, "JetStreamRefused", message, generation=generation)
        write_status(patch.status, status, {"observedGeneration": generation}, [refused])
        raise kopf.TemporaryError(message, delay=60) from None
    except NATS_ERRORS as exc:
        reason, message, delay = nats_trouble(exc, _connected(memo, spec))
        down = condition("Ready", False, reason, message, generation=generation)
        write_status(patch.status, status, {}, [down])
        raise kopf.TemporaryError(message, delay=delay) from None
    fields = {"observedGeneration": generation, **_queue_status(queue, outcome.stats)}
    if outcome.report is None:  # refused: nothing touched
        owner = str(outcome.claim.owner)
        logger.info(f"queue {queue} belongs to TaskQueue {owner}; JetStream left as it is")
        conditions = await _refused(body, status, memo, queue, owner)
        write_status(patch.status, status, fields, conditions)
        return
    await _report_events(memo.events, body, outcome.report)
    write_status(patch.status, status, fields, _owned_conditions(queue, outcome.report, generation))


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
        return await refresh_queue_status(body, status, memo)

    metrics: OperatorMetrics = memo.metrics
    try:
        await poll_until_stopped(
            stopped,
            logger,
            "refreshing the status",
            metrics.counting_errors("TaskQueue", refresh),
            retry_after=STATUS_INTERVAL,
        )
    finally:
        # Deleted (or the operator stops): its series go with it.
        metrics.forget_queue(body["metadata"]["namespace"], body["metadata"]["name"])


async def refresh_queue_status(body: kopf.Body, status: kopf.Status, memo: kopf.Memo) -> float:
    """Keep the backlog numbers in the status fresh; recreate objects deleted behind our
    back; take the queue over when its owner let it go. Returns the seconds until the
    next refresh."""
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return STATUS_INTERVAL
    try:
        spec, queue = parse_spec(body)
    except ValueError:
        return STATUS_INTERVAL
    generation = meta.get("generation")
    fields: dict[str, Any]
    delay = STATUS_INTERVAL
    try:
        outcome = await sync_queue(memo, spec, queue, _owner(body), refresh=True)
    except NATS_ERRORS as exc:
        reason, message, delay = nats_trouble(exc, _connected(memo, spec))
        fields, conditions = {}, [condition("Ready", False, reason, message)]
    else:
        backlog = outcome.stats.pending if outcome.stats else None
        memo.metrics.queue_observed(meta["namespace"], meta["name"], queue, backlog)
        # The same conditions the change handler wrote (generation included): no patch
        # unless something really changed.
        if outcome.stats is None:
            owner = str(outcome.claim.owner)
            fields = _queue_status(queue, None)
            conditions = await _refused(body, status, memo, queue, owner)
        elif outcome.report is None:
            fields, conditions = _stats_status(outcome.stats), [_ready(queue, generation)]
        else:  # created, recreated or taken over just now
            await _report_events(memo.events, body, outcome.report)
            fields = _queue_status(queue, outcome.stats)
            conditions = _owned_conditions(queue, outcome.report, generation)
    changes = status_update(status, fields, conditions, time.time())
    if changes:
        writer: StatusWriter = memo.status_writer
        await writer.patch(RESOURCE[2], meta["namespace"], meta["name"], changes)
    return delay


def _connected(memo: kopf.Memo, spec: TaskQueueSpec) -> bool:
    connections: NatsConnections = memo.nats
    return connections.connected(spec.nats.url if spec.nats else None)


def _not_ours(metadata: Mapping[str, str] | None, claim: claims.Claim) -> str:
    if metadata is None:
        return "has no streams"
    if claim.owner:
        return f"belongs to TaskQueue {claim.owner}"
    return "has no owner (a deleting TaskQueue never adopts a queue)"


@kopf.on.delete(*RESOURCE)
async def delete_queue(body: kopf.Body, memo: kopf.Memo, logger: Any, retry: int, **_: Any) -> None:
    """Honour spec.deletionPolicy on a queue this TaskQueue owns: Retain keeps the streams
    and tasks and releases the claim, Delete removes them. Another's queue is left alone."""
    try:
        spec, queue = parse_spec(body)
    except ValueError:
        logger.warning("invalid TaskQueue deleted; nothing removed from JetStream")
        return
    owner, delete = _owner(body), spec.deletion_policy == "Delete"
    try:
        js, lock = await _open(memo, spec, queue)
        async with lock:
            metadata = await queues.claim_metadata(js, queue)
            claim = claims.decide(metadata, owner)
            if claim.verdict is not claims.Verdict.OWNED:
                logger.info(f"queue {queue} {_not_ours(metadata, claim)}: JetStream left as it is")
                return
            if delete:
                done = await queues.delete_queue(js, queue)
            else:
                done = await queues.release_queue(js, queue, owner)
    except NATS_ERRORS as exc:
        if not delete and retry + 1 >= RELEASE_ATTEMPTS:
            logger.warning(
                f"deletionPolicy Retain: could not release queue {queue} (NATS: {exc!r}); "
                f"it stays claimed by {owner} until a TaskQueue of that name takes it back"
            )
            return
        raise kopf.TemporaryError(f"queue {queue}: NATS: {exc!r}", delay=5) from None
    if delete:
        logger.info(f"deletionPolicy Delete: removed {', '.join(done) or 'nothing (already gone)'}")
    else:
        logger.info(f"deletionPolicy Retain: kept queue {queue}, released {', '.join(done)}")
