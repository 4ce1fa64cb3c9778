"""kopf handlers for WorkerPool: the worker Deployment and the autoscaling loop.

The change handler makes the Deployment match the spec (a changed pod template
rolls it) and reports on the queues at once. A daemon polls every pool: it copies
the Deployment's replica counts into the status, checks the queues exist, and,
with autoscaling on, applies the policy's decision to the Deployment, recording
it in the status and in an Event. The replica counts come from an index fed by a
watch on the worker Deployments, so polling many pools costs no Kubernetes reads.

Conditions: ``Ready`` (Deployment applied and every queue exists) and
``QueuesFound`` (which queues are missing, if any).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, NamedTuple, cast

import kopf
import nats.js.errors
from pydantic import ValidationError

from celeriac.operator import manifests, queues
from celeriac.operator.autoscaling import Observation, ScalingSettings, decide
from celeriac.operator.config import OperatorConfig
from celeriac.operator.connections import NatsConnections
from celeriac.operator.kube import DeploymentConflictError, Deployments, Events, StatusWriter
from celeriac.operator.metrics import OperatorMetrics, counted
from celeriac.operator.polling import poll_until_stopped
from celeriac.operator.status import (
    condition,
    invalid_spec,
    scaling_state,
    scaling_status,
    status_update,
    write_status,
)
from celeriac.operator.taskqueues import NATS_ERRORS
from celeriac.protocol.kubeschema import parse_duration
from celeriac.protocol.resources import GROUP, VERSION, WorkerPoolSpec

RESOURCE = (GROUP, VERSION, "workerpools")
DEFAULT_POLL = 2.0
# How soon to look again for a pool's Deployment that the index does not show yet.
FIRST_POLL_WAIT = 0.5


class ReplicaCounts(NamedTuple):
    """What a poll needs of a worker Deployment."""

    desired: int  # spec.replicas
    replicas: int  # status.replicas
    ready: int  # status.readyReplicas


def parse_spec(body: Mapping[str, Any]) -> WorkerPoolSpec:
    """The spec of a WorkerPool body; ValueError when invalid."""
    try:
        return WorkerPoolSpec.model_validate(dict(body.get("spec") or {}))
    except ValidationError as exc:
        raise ValueError(str(exc)) from None


def initial_replicas(
    spec: WorkerPoolSpec, status: Mapping[str, Any] | None, current: Mapping[str, Any] | None
) -> int:
    """Replicas to write into the Deployment when applying the spec."""
    if not spec.autoscaling_enabled():
        return spec.replicas
    if current is not None:
        return int(current["spec"].get("replicas") or 0)
    desired = (status or {}).get("desiredReplicas")
    auto = spec.autoscaling
    assert auto is not None
    return int(desired) if desired is not None else auto.min_replicas


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
@counted("WorkerPool")
async def reconcile_pool(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Create or update the pool's Deployment."""
    meta = body["metadata"]
    pool = manifests.PoolRef(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    generation = meta.get("generation")
    try:
        spec = parse_spec(body)
    except ValueError as exc:
        message = invalid_spec(patch.status, status, generation, "WorkerPool", exc)
        raise kopf.PermanentError(message) from None
    config: OperatorConfig = memo.config
    deployments: Deployments = memo.deployments
    name = manifests.deployment_name(pool.name)
    current = await deployments.read(pool.namespace, name)
    replicas = initial_replicas(spec, status, current)
    url = config.nats_url_for_workers(spec.nats.url if spec.nats else None)
    wanted = manifests.worker_deployment(
        pool, spec, nats_url=url, replicas=replicas, log_format=config.log_format
    )
    try:
        # An autoscaled pool's replicas are the poll's: a scale it makes while this
        # handler runs (a new leader resuming) must not be undone by the replace.
        applied = await deployments.apply(
            wanted, current, pool.uid, keep_replicas=spec.autoscaling_enabled()
        )
    except DeploymentConflictError as exc:
        bad = condition("Ready", False, "DeploymentConflict", str(exc), generation=generation)
        write_status(patch.status, status, {"observedGeneration": generation}, [bad])
        raise kopf.PermanentError(str(exc)) from None
    if current is not None and current["spec"].get("replicas") != replicas:
        await memo.events.post(body, "Scaled", f"spec.replicas: scaled to {replicas}")
    counts = replica_counts(applied["spec"], applied.get("status") or {})
    fields: dict[str, Any] = {
        "observedGeneration": generation,
        "deployment": name,
        "selector": manifests.selector_string(pool.name),
        "desiredReplicas": counts.desired,
        "replicas": counts.replicas,
        "readyReplicas": counts.ready,
    }
    # Report on the queues now, as a poll would: the pool is Ready without waiting for
    # its first poll, and that poll usually finds nothing to patch.
    conditions: list[dict[str, Any]] = []
    try:
        found, missing = await _observe(memo, spec)
    except NATS_ERRORS:
        pass  # the poll reports NATS as unavailable
    else:
        fields.update(_queue_fields(found))
        await _report_missing(memo.events, body, status, missing)
        conditions = _ready_conditions(missing)
    write_status(patch.status, status, fields, conditions)


async def _observe(
    memo: kopf.Memo, spec: WorkerPoolSpec
) -> tuple[list[queues.QueueStats], list[str]]:
    """Stats of the pool's queues that exist, and the names of those that do not."""
    connections: NatsConnections = memo.nats
    js = await connections.jetstream(spec.nats.url if spec.nats else None)
    return await _observe_queues(js, list(spec.queues))


def _queue_fields(found: list[queues.QueueStats]) -> dict[str, int]:
    return {
        "backlog": sum(s.pending for s in found),
        "inFlight": sum(s.ack_pending for s in found),
    }


def _ready_conditions(missing: list[str]) -> list[dict[str, Any]]:
    ready = condition(
        "Ready",
        not missing,
        "QueueNotFound" if missing else "Ready",
        "waiting for queues to exist" if missing else "Deployment applied and queues exist",
    )
    return [ready, _queues_condition(missing)]


async def _observe_queues(
    js: Any, queue_names: list[str]
) -> tuple[list[queues.QueueStats], list[str]]:
    found, missing = [], []
    for queue in queue_names:
        try:
            # Pools need the backlog only: the dead-letter count is the TaskQueue's.
            found.append(await queues.queue_stats(js, queue, dead_letters=False))
        except nats.js.errors.NotFoundError:
            missing.append(queue)
    return found, missing


def _queues_condition(missing: list[str]) -> dict[str, Any]:
    if not missing:
        return condition("QueuesFound", True, "QueuesFound", "every queue exists")
    message = (
        f"queue(s) {', '.join(missing)} do not exist in NATS: create a TaskQueue for each "
        "(the workers do not declare queues under the operator)"
    )
    return condition("QueuesFound", False, "QueueNotFound", message)


class _Rates(NamedTuple):
    """Tasks per second finished and arrived since the previous poll, and the tasks in
    flight then; None where there was no previous poll to compare with."""

    completed: float | None = None
    arrived: float | None = None
    in_flight: int | None = None


def _rates(memo: kopf.Memo, completed: int, arrived: int, in_flight: int, now: float) -> _Rates:
    """The rates since the previous poll (whose counters the object's memo keeps)."""
    previous = memo.get("counters")
    memo["counters"] = (completed, arrived, in_flight, now)
    if previous is None or now <= previous[3] or completed < previous[0] or arrived < previous[1]:
        return _Rates()
    span = now - previous[3]
    return _Rates((completed - previous[0]) / span, (arrived - previous[1]) / span, previous[2])


def poll_interval(spec: WorkerPoolSpec) -> float:
    """Seconds between two polls of the pool."""
    auto = spec.autoscaling
    return parse_duration(auto.poll_interval) if auto else DEFAULT_POLL


def replica_counts(spec: Mapping[str, Any], status: Mapping[str, Any]) -> ReplicaCounts:
    """The replica numbers of a Deployment's spec and status."""
    return ReplicaCounts(
        desired=int(spec.get("replicas") or 0),
        replicas=int(status.get("replicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
    )


@kopf.index("apps", "v1", "deployments", labels={manifests.MANAGED_BY_LABEL: manifests.MANAGED_BY})
async def pool_deployments(
    namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[tuple[str | None, str], ReplicaCounts]:
    """Replica counts of every worker Deployment, by namespace and name (kept by a watch)."""
    return {(namespace, name): replica_counts(spec, status)}


def indexed_counts(index: kopf.Index[Any, Any], namespace: str, name: str) -> ReplicaCounts | None:
    """The counts of one Deployment from the index; None when it is not there (yet)."""
    for counts in index.get((namespace, name), ()):
        return cast(ReplicaCounts, counts)
    return None


@kopf.daemon(*RESOURCE, cancellation_timeout=5.0)
async def poll_pool(
    body: kopf.Body,
    status: kopf.Status,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    logger: Any,
    **kwargs: Any,
) -> None:
    """Poll the pool every pollInterval until it is deleted or the operator stops.

    One loop per pool that sleeps in between: no work at all between polls (a kopf
    timer would be called every tick), and its status patch is sent only when
    something changed. ``body`` and ``status`` are kept current by kopf.
    """
    # kopf passes every index to every handler as a keyword named after the index.
    index: kopf.Index[Any, Any] = kwargs["pool_deployments"]
    metrics: OperatorMetrics = memo.metrics
    try:
        await poll_until_stopped(
            stopped,
            logger,
            "polling the pool",
            metrics.counting_errors("WorkerPool", lambda: observe_pool(body, status, memo, index)),
            retry_after=DEFAULT_POLL,
        )
    finally:
        # Deleted (or the operator stops): its series go with it.
        metrics.forget_pool(body["metadata"]["namespace"], body["metadata"]["name"])


async def observe_pool(
    body: kopf.Body, status: kopf.Status, memo: kopf.Memo, index: kopf.Index[Any, Any]
) -> float:
    """Report replicas and backlog; with autoscaling on, scale the Deployment.

    Returns the seconds to wait before the next poll.
    """
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return DEFAULT_POLL
    dep = indexed_counts(index, meta["namespace"], manifests.deployment_name(meta["name"]))
    if dep is None or "deployment" not in status:
        # The change handler has not applied the Deployment (or its status is not seen
        # yet): look again soon rather than report the same things twice.
        return FIRST_POLL_WAIT
    try:
        spec = parse_spec(body)
    except ValueError:
        return DEFAULT_POLL  # the change handler reports the invalid spec
    now = time.time()
    fields, conditions = await _observation(body, spec, dep=dep, status=status, memo=memo, now=now)
    memo.metrics.pool_observed(meta["namespace"], meta["name"], fields)
    changes = status_update(status, fields, conditions, now)
    if changes:
        writer: StatusWriter = memo.status_writer
        await writer.patch(RESOURCE[2], meta["namespace"], meta["name"], changes)
    return poll_interval(spec)


async def _observation(
    body: kopf.Body,
    spec: WorkerPoolSpec,
    *,
    dep: ReplicaCounts,
    status: Mapping[str, Any],
    memo: kopf.Memo,
    now: float,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The status fields and conditions of one poll (scaling the Deployment if needed)."""
    fields: dict[str, Any] = {"replicas": dep.replicas, "readyReplicas": dep.ready}
    try:
        found, missing = await _observe(memo, spec)
    except NATS_ERRORS as exc:
        return fields, [condition("Ready", False, "NatsUnavailable", f"NATS: {exc!r}")]
    fields.update(_queue_fields(found))
    if spec.autoscaling_enabled():
        completed = sum(s.completed for s in found)
        # Every task that reached the queues is finished, running or waiting.
        arrived = completed + fields["inFlight"] + fields["backlog"]
        rates = _rates(memo, completed, arrived, fields["inFlight"], now)
        obs = Observation(
            pending=fields["backlog"],
            ack_pending=fields["inFlight"],
            current_replicas=dep.desired,
            now=now,
            completion_rate=rates.completed,
            previous_in_flight=rates.in_flight,
            ready_replicas=dep.ready,
            arrival_rate=rates.arrived,
        )
        fields.update(await _autoscale(body, spec, obs, status, memo))
    else:
        fields["desiredReplicas"] = spec.replicas
    await _report_missing(memo.events, body, status, missing)
    return fields, _ready_conditions(missing)


async def _autoscale(
    body: kopf.Body,
    spec: WorkerPoolSpec,
    obs: Observation,
    status: Mapping[str, Any] | None,
    memo: kopf.Memo,
) -> dict[str, Any]:
    """Decide, apply a change to the Deployment, announce it; the status fields to record."""
    decision = decide(obs, ScalingSettings.from_spec(spec), scaling_state(status))
    meta = body["metadata"]
    memo.metrics.scaled(meta["namespace"], meta["name"], obs.current_replicas, decision.replicas)
    if decision.replicas != obs.current_replicas:
        deployments: Deployments = memo.deployments
        name = manifests.deployment_name(meta["name"])
        # The Deployment first: if we stop right after, the next leader sees it done.
        await deployments.scale(meta["namespace"], name, decision.replicas)
        await memo.events.post(body, "Scaled", decision.reason)
    return scaling_status(decision)


async def _report_missing(
    events: Events, body: kopf.Body, status: Mapping[str, Any] | None, missing: list[str]
) -> None:
    """Post a warning Event when queues go missing (once, not on every poll)."""
    before = {c.get("type"): c for c in (status or {}).get("conditions") or []}
    was_missing = before.get("QueuesFound", {}).get("status") == "False"
    if missing and not was_missing:
        await events.post(body, "QueueNotFound", _queues_condition(missing)["message"], "Warning")
