"""kopf handlers for WorkerPool: the worker Deployment and the autoscaling loop.

The change handler makes the Deployment match the spec (a changed pod template
rolls it). A timer polls every pool: it copies the Deployment's replica counts
into the status, checks the queues exist, and, with autoscaling on, applies the
policy's decision to the Deployment, recording it in the status and in an Event.

Conditions: ``Ready`` (Deployment applied and every queue exists) and
``QueuesFound`` (which queues are missing, if any).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import kopf
import nats.js.errors
from pydantic import ValidationError

from celeriac.operator import manifests, queues
from celeriac.operator.autoscaling import Observation, ScalingSettings, decide
from celeriac.operator.config import OperatorConfig
from celeriac.operator.connections import NatsConnections
from celeriac.operator.kube import DeploymentConflictError, Deployments, Events
from celeriac.operator.status import (
    condition,
    scaling_state,
    scaling_status,
    write_status,
)
from celeriac.operator.taskqueues import NATS_ERRORS
from celeriac.protocol.kubeschema import parse_duration
from celeriac.protocol.resources import GROUP, VERSION, WorkerPoolSpec

RESOURCE = (GROUP, VERSION, "workerpools")
TICK = 1.0
DEFAULT_POLL = 2.0


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
        bad = condition("Ready", False, "InvalidSpec", str(exc), generation=generation)
        write_status(patch.status, status, {"observedGeneration": generation}, [bad])
        raise kopf.PermanentError(f"invalid WorkerPool: {exc}") from None
    config: OperatorConfig = memo.config
    deployments: Deployments = memo.deployments
    name = manifests.deployment_name(pool.name)
    current = await deployments.read(pool.namespace, name)
    replicas = initial_replicas(spec, status, current)
    url = config.nats_url_for_workers(spec.nats.url if spec.nats else None)
    wanted = manifests.worker_deployment(pool, spec, nats_url=url, replicas=replicas)
    try:
        await deployments.apply(wanted, current, pool.uid)
    except DeploymentConflictError as exc:
        bad = condition("Ready", False, "DeploymentConflict", str(exc), generation=generation)
        write_status(patch.status, status, {"observedGeneration": generation}, [bad])
        raise kopf.PermanentError(str(exc)) from None
    if current is not None and current["spec"].get("replicas") != replicas:
        await memo.events.post(body, "Scaled", f"spec.replicas: scaled to {replicas}")
    fields = {
        "observedGeneration": generation,
        "deployment": name,
        "selector": manifests.selector_string(pool.name),
        "desiredReplicas": replicas,
    }
    write_status(patch.status, status, fields, [])


async def _observe_queues(
    js: Any, queue_names: list[str]
) -> tuple[list[queues.QueueStats], list[str]]:
    found, missing = [], []
    for queue in queue_names:
        try:
            found.append(await queues.queue_stats(js, queue))
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


def _completion_rate(memo: kopf.Memo, completed: int, now: float) -> float | None:
    """Tasks per second finished since the previous poll (kept in the object's memo)."""
    previous = memo.get("completed")
    memo["completed"] = (completed, now)
    if previous is None or now <= previous[1] or completed < previous[0]:
        return None
    return float((completed - previous[0]) / (now - previous[1]))


def _due(memo: kopf.Memo, spec: WorkerPoolSpec, now: float) -> bool:
    auto = spec.autoscaling
    interval = parse_duration(auto.poll_interval) if auto else DEFAULT_POLL
    last = memo.get("last_poll")
    if last is not None and now - last < interval - 0.05:
        return False
    memo["last_poll"] = now
    return True


@kopf.timer(*RESOURCE, interval=TICK)
async def observe_pool(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Report replicas and backlog; with autoscaling on, scale the Deployment."""
    now = time.time()
    try:
        spec = parse_spec(body)
    except ValueError:
        return
    if body["metadata"].get("deletionTimestamp") or not _due(memo, spec, now):
        return
    meta = body["metadata"]
    deployments: Deployments = memo.deployments
    name = manifests.deployment_name(meta["name"])
    dep = await deployments.read(meta["namespace"], name)
    if dep is None:
        return  # the change handler creates it
    current = int(dep["spec"].get("replicas") or 0)
    fields: dict[str, Any] = {
        "replicas": int((dep.get("status") or {}).get("replicas") or 0),
        "readyReplicas": int((dep.get("status") or {}).get("readyReplicas") or 0),
    }
    connections: NatsConnections = memo.nats
    try:
        js = await connections.jetstream(spec.nats.url if spec.nats else None)
        found, missing = await _observe_queues(js, list(spec.queues))
    except NATS_ERRORS as exc:
        down = condition("Ready", False, "NatsUnavailable", f"NATS: {exc!r}")
        write_status(patch.status, status, fields, [down])
        return
    pending = sum(s.pending for s in found)
    ack_pending = sum(s.ack_pending for s in found)
    fields.update(backlog=pending, inFlight=ack_pending)
    if spec.autoscaling_enabled():
        rate = _completion_rate(memo, sum(s.completed for s in found), now)
        obs = Observation(pending, ack_pending, current, now, rate)
        fields.update(await _autoscale(body, spec, obs, status, memo))
    else:
        fields["desiredReplicas"] = spec.replicas
    await _report_missing(memo.events, body, status, missing)
    ready = condition(
        "Ready",
        not missing,
        "QueueNotFound" if missing else "Ready",
        "waiting for queues to exist" if missing else "Deployment applied and queues exist",
    )
    write_status(patch.status, status, fields, [ready, _queues_condition(missing)])


async def _autoscale(
    body: kopf.Body,
    spec: WorkerPoolSpec,
    obs: Observation,
    status: Mapping[str, Any] | None,
    memo: kopf.Memo,
) -> dict[str, Any]:
    """Decide, apply a change to the Deployment, announce it; the status fields to record."""
    decision = decide(obs, ScalingSettings.from_spec(spec), scaling_state(status))
    if decision.replicas != obs.current_replicas:
        meta = body["metadata"]
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
