"""The autoscaling policy: backlog observations in, a replica count and its reason out.

A pure function, so every rule is table-tested without a cluster or a broker:

* the result always lies in ``[minReplicas, maxReplicas]``;
* scale up at once when the backlog needs more replicas (from zero as soon as work appears);
* scale down only after fewer replicas were enough for the whole stabilization window, and
  then only to the most that was needed during that window (so a steady load never flaps);
* with ``minReplicas: 0``, go to zero once the queues were empty for ``idleBeforeZero``.

The few facts the policy remembers between polls (:class:`ScalingState`) are stored by
the operator in the WorkerPool status, so a restarted operator carries on where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from celeriac.protocol.kubeschema import parse_duration
from celeriac.protocol.resources import WorkerPoolSpec


@dataclass(frozen=True)
class ScalingSettings:
    """The pool's autoscaling settings, resolved to numbers."""

    min_replicas: int
    max_replicas: int
    target_backlog_per_replica: int
    target_drain_seconds: float | None
    scale_down_stabilization_seconds: float
    idle_before_zero_seconds: float

    @classmethod
    def from_spec(cls, spec: WorkerPoolSpec) -> ScalingSettings:
        """Settings of a pool whose ``spec.autoscaling`` is set."""
        auto = spec.autoscaling
        if auto is None:
            raise ValueError("the WorkerPool has no spec.autoscaling")
        drain = auto.target_drain_time
        return cls(
            min_replicas=auto.min_replicas,
            max_replicas=auto.max_replicas,
            target_backlog_per_replica=auto.target_backlog_per_replica or spec.concurrency,
            target_drain_seconds=parse_duration(drain) if drain is not None else None,
            scale_down_stabilization_seconds=parse_duration(auto.scale_down_stabilization),
            idle_before_zero_seconds=parse_duration(auto.idle_before_zero),
        )


@dataclass(frozen=True)
class Observation:
    """What one poll saw, summed over the pool's queues; times are Unix seconds."""

    pending: int
    ack_pending: int
    current_replicas: int
    now: float
    # Tasks finished per second by the whole pool, when known.
    completion_rate: float | None = None

    @property
    def work(self) -> int:
        """Tasks waiting or running."""
        return self.pending + self.ack_pending


@dataclass(frozen=True)
class ScalingState:
    """What the policy remembers between polls (kept in the WorkerPool status)."""

    last_scale_time: float | None = None
    # Last time the queues had work; starts the idle clock toward zero.
    last_active_time: float | None = None
    # Since when fewer replicas would have done, and the most needed since then.
    scale_down_since: float | None = None
    scale_down_peak: int | None = None


@dataclass(frozen=True)
class Decision:
    """Replicas to run now, why, and the state to remember."""

    replicas: int
    reason: str
    state: ScalingState
    changed: bool


def needed_replicas(obs: Observation, settings: ScalingSettings) -> int:
    """Replicas the current work calls for, before clamping (0 when there is no work)."""
    work = obs.work
    if work <= 0:
        return 0
    per_replica = float(settings.target_backlog_per_replica)
    drain = settings.target_drain_seconds
    rate = obs.completion_rate
    if drain is not None and rate is not None and rate > 0 and obs.current_replicas > 0:
        # Each replica finishes rate/current tasks a second; the backlog must go in `drain`.
        per_replica = max(rate / obs.current_replicas * drain, 1.0)
    return max(1, math.ceil(work / per_replica))


def _clamp(value: int, settings: ScalingSettings) -> int:
    return max(settings.min_replicas, min(settings.max_replicas, value))


def _idle_floor(obs: Observation, settings: ScalingSettings, last_active: float | None) -> int:
    """1 while an idle pool with minReplicas 0 waits out idleBeforeZero, else 0."""
    if obs.work > 0 or obs.current_replicas == 0 or last_active is None:
        return 0
    idle = obs.now - last_active
    return 1 if idle < settings.idle_before_zero_seconds else 0


def target_replicas(
    obs: Observation, settings: ScalingSettings, last_active: float | None
) -> tuple[int, str]:
    """The replica count the work asks for now, clamped, and why."""
    needed = needed_replicas(obs, settings)
    floor = _idle_floor(obs, settings, last_active)
    target = _clamp(max(needed, floor), settings)
    if obs.work > 0:
        why = (
            f"{obs.work} tasks ({obs.pending} waiting, {obs.ack_pending} running) "
            f"need {needed} replicas"
        )
    elif floor:
        why = "queues empty; keeping one replica until idleBeforeZero passes"
    else:
        why = "queues empty"
    if target != max(needed, floor):
        why += f", clamped to [{settings.min_replicas}, {settings.max_replicas}]"
    return target, why


def decide(obs: Observation, settings: ScalingSettings, state: ScalingState) -> Decision:
    """The replica count for this poll; see the module docstring for the rules."""
    last_active = state.last_active_time
    if obs.work > 0 or (last_active is None and obs.current_replicas > 0):
        # Work now, or a running pool seen for the first time: the idle clock starts here.
        last_active = obs.now
    state = replace(state, last_active_time=last_active)
    current = obs.current_replicas
    target, why = target_replicas(obs, settings, last_active)
    calm = replace(state, scale_down_since=None, scale_down_peak=None)
    if target == current:
        return Decision(current, f"steady: {why}", calm, changed=False)
    if target > current or target == 0:
        # Up at once; down to zero only through the idle timer, which already waited.
        moved = replace(calm, last_scale_time=obs.now)
        verb = "scale up" if target > current else "scale to zero"
        return Decision(target, f"{verb} from {current} to {target}: {why}", moved, changed=True)
    return _scale_down(obs, settings, state, target, why)


def _scale_down(
    obs: Observation, settings: ScalingSettings, state: ScalingState, target: int, why: str
) -> Decision:
    current = obs.current_replicas
    since = state.scale_down_since if state.scale_down_since is not None else obs.now
    peak = max(target, state.scale_down_peak or 0)
    waited = obs.now - since
    window = settings.scale_down_stabilization_seconds
    if waited < window or peak >= current:
        waiting = replace(state, scale_down_since=since, scale_down_peak=peak)
        reason = f"waiting {window - waited:.0f}s more before scaling down to {peak}: {why}"
        return Decision(current, reason, waiting, changed=False)
    done = ScalingState(last_scale_time=obs.now, last_active_time=state.last_active_time)
    reason = f"scale down from {current} to {peak} after {window:.0f}s of less work: {why}"
    return Decision(peak, reason, done, changed=True)
