"""The autoscaling policy: backlog observations in, a replica count and its reason out.

A pure function, so every rule is table-tested without a cluster or a broker:

* the result always lies in ``[minReplicas, maxReplicas]``;
* scale up at once when the work needs at least half a replica more than the pool has
  (from zero as soon as work appears): the replicas busy now, plus enough to drain the
  waiting tasks within ``targetDrainTime`` at the measured per-replica rate; before any
  rate is known, ``targetBacklogPerReplica`` tasks per replica;
* a full pool with a few tasks waiting is not "more work": only tasks beyond its slots
  that would wait longer than a task runs (at least a second) at its full rate are, which
  keeps the random peaks of a noisy steady load from flapping it;
* scale down once per stabilization window, to the replicas the *mean* demand of the
  window needs (tasks in flight, averaged over its polls, plus square-root headroom) --
  not a peak remembered while a backlog drained, so a pool is back to one replica within
  one window of its queue emptying; a window ends after a quarter of it when half the
  replicas or fewer would do, and lasts 20 task durations at least for long tasks;
* with ``minReplicas: 0``, go to zero once the queues were empty for ``idleBeforeZero``.

With ``targetBacklogPerReplica`` set explicitly the pool is sized by backlog alone (tasks
waiting and running per replica), with the same slack and window.

The few facts the policy remembers between polls (:class:`ScalingState`) are stored by
the operator in the WorkerPool status, so a restarted operator carries on where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from celeriac.protocol.kubeschema import parse_duration
from celeriac.protocol.resources import WorkerPoolSpec

# Without targetDrainTime: a backlog should be gone this long after the pods it adds start.
DEFAULT_DRAIN_SECONDS = 5.0
# Scale up only for work needing this many replicas more than the pool has.
UP_SLACK = 0.5
# A window without demand, or whose demand needs at most half the replicas (and at least
# EARLY_MIN_STEP fewer), ends after this fraction of it.
EARLY_FRACTION = 0.25
EARLY_MIN_STEP = 2
# The scale-down window lasts at least this many mean task durations.
WINDOW_TASKS = 20.0
# Tasks beyond the slots trigger a scale-up once they would wait this long (or a task's
# duration, if longer) at the pool's full rate.
UP_WAIT_SECONDS = 1.0
# Before any rate is measured, a scale-up needs this many standard deviations of the
# pool's own noise in tasks beyond its slots.
UP_NOISE = 3.0
# Slots kept free above the mean in-flight tasks a: a + HEADROOM * sqrt(a) (the
# square-root staffing rule: waiting stays rare while big pools run near full).
HEADROOM = 1.0
# Weight of one poll's task-duration sample, and the most one sample moves the estimate.
DURATION_SMOOTHING = 0.3
DURATION_STEP = 2.0


@dataclass(frozen=True)
class ScalingSettings:
    """The pool's autoscaling settings, resolved to numbers."""

    min_replicas: int
    max_replicas: int
    target_backlog_per_replica: int
    target_drain_seconds: float | None
    scale_down_stabilization_seconds: float
    idle_before_zero_seconds: float
    # Task slots of one replica (spec.concurrency); None: targetBacklogPerReplica.
    concurrency: int | None = None
    # targetBacklogPerReplica was set: size by backlog alone.
    by_backlog: bool = False

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
            concurrency=spec.concurrency,
            by_backlog=auto.target_backlog_per_replica is not None,
        )

    @property
    def slots(self) -> int:
        """Tasks one replica runs at once."""
        return self.concurrency or self.target_backlog_per_replica

    @property
    def drain_seconds(self) -> float:
        """How long a backlog may take to drain."""
        return self.target_drain_seconds or DEFAULT_DRAIN_SECONDS


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
    # Mean seconds a task runs (Little's law: in flight / completion rate), smoothed.
    task_seconds: float | None = None
    # Demand summed over the polls of the scale-down window (tasks in flight; with
    # targetBacklogPerReplica, tasks waiting and in flight), and how many polls.
    scale_down_demand: float | None = None
    scale_down_polls: int | None = None


@dataclass(frozen=True)
class Decision:
    """Replicas to run now, why, and the state to remember."""

    replicas: int
    reason: str
    state: ScalingState
    changed: bool


def task_seconds(obs: Observation, previous: float | None) -> float | None:
    """The task-duration estimate after this poll (in flight / completion rate, smoothed).

    One sample moves the estimate at most DURATION_STEP-fold: a poll that sees a burst
    land after an idle interval (many in flight, few completed yet) must not make every
    replica look slow.
    """
    rate = obs.completion_rate
    if rate is None or rate <= 0 or obs.ack_pending <= 0:
        return previous
    sample = obs.ack_pending / rate
    if previous is None:
        return sample
    sample = min(max(sample, previous / DURATION_STEP), previous * DURATION_STEP)
    smoothed = math.exp(
        (1 - DURATION_SMOOTHING) * math.log(previous) + DURATION_SMOOTHING * math.log(sample)
    )
    return float(f"{smoothed:.4g}")


def replica_rate(
    obs: Observation, settings: ScalingSettings, duration: float | None
) -> float | None:
    """Tasks per second one replica finishes, when it can be told."""
    if duration is not None and duration > 0:
        return settings.slots / duration
    rate = obs.completion_rate
    if rate is not None and rate > 0 and obs.current_replicas > 0:
        return rate / obs.current_replicas
    return None


def needed(obs: Observation, settings: ScalingSettings, duration: float | None = None) -> float:
    """Replicas (fractional) the work calls for now: busy ones plus the backlog's drain."""
    if settings.by_backlog:
        return obs.work / settings.target_backlog_per_replica
    per_replica = replica_rate(obs, settings, duration)
    if per_replica is None:
        # Cold start: nothing measured yet.
        return obs.work / settings.target_backlog_per_replica
    return obs.ack_pending / settings.slots + obs.pending / (per_replica * settings.drain_seconds)


def needed_replicas(
    obs: Observation, settings: ScalingSettings, duration: float | None = None
) -> int:
    """Replicas the current work calls for, before clamping (0 when there is no work)."""
    if obs.work <= 0:
        return 0
    return max(1, math.ceil(needed(obs, settings, duration) - 1e-9))


def _clamp(value: int, settings: ScalingSettings) -> int:
    return max(settings.min_replicas, min(settings.max_replicas, value))


def _idle_floor(obs: Observation, settings: ScalingSettings, last_active: float | None) -> int:
    """1 while an idle pool with minReplicas 0 waits out idleBeforeZero, else 0."""
    if obs.work > 0 or obs.current_replicas == 0 or last_active is None:
        return 0
    idle = obs.now - last_active
    return 1 if idle < settings.idle_before_zero_seconds else 0


def _short(obs: Observation, settings: ScalingSettings, duration: float | None) -> bool:
    """The pool is short of replicas: the work needs half a replica more than it has, and
    the tasks beyond its slots are no random peak of a steady load. With a measured rate
    that means they would wait longer than a task runs (at least UP_WAIT_SECONDS) at the
    pool's full rate; before one, more than UP_NOISE standard deviations of a Poisson count
    the size of its slots."""
    current = obs.current_replicas
    beyond = obs.work - current * settings.slots
    if needed(obs, settings, duration) <= current + UP_SLACK or beyond <= 0:
        return False
    per_replica = replica_rate(obs, settings, duration)
    if per_replica is None or duration is None:
        return beyond > UP_NOISE * math.sqrt(current * settings.slots)
    return beyond / (current * per_replica) > max(UP_WAIT_SECONDS, duration)


def _starting(obs: Observation, settings: ScalingSettings, duration: float | None) -> bool:
    """Before any rate is known, a pool that finished nothing and runs nothing is still
    starting: more replicas would not start any sooner, so the backlog waits for them."""
    return (
        duration is None
        and not settings.by_backlog
        and obs.current_replicas > 0
        and obs.ack_pending == 0
        and obs.completion_rate == 0
    )


def _describe(obs: Observation, need: int, floor: int) -> str:
    if obs.work > 0:
        return (
            f"{obs.work} tasks ({obs.pending} waiting, {obs.ack_pending} running) "
            f"need {need} replicas"
        )
    if floor:
        return "queues empty; keeping one replica until idleBeforeZero passes"
    return "queues empty"


def decide(obs: Observation, settings: ScalingSettings, state: ScalingState) -> Decision:
    """The replica count for this poll; see the module docstring for the rules."""
    last_active = previous_active = state.last_active_time
    if obs.work > 0 or (last_active is None and obs.current_replicas > 0):
        # Work now, or a running pool seen for the first time: the idle clock starts here.
        last_active = obs.now
    duration = task_seconds(obs, state.task_seconds)
    state = replace(state, last_active_time=last_active, task_seconds=duration)
    current = obs.current_replicas
    floor = _idle_floor(obs, settings, last_active)
    need = needed_replicas(obs, settings, duration)
    why = _describe(obs, need, floor)
    calm = replace(
        state,
        scale_down_since=None,
        scale_down_peak=None,
        scale_down_demand=None,
        scale_down_polls=None,
    )
    wanted = max(need, floor)
    up = _clamp(wanted, settings)
    if _starting(obs, settings, duration) and up > current >= settings.min_replicas:
        reason = f"waiting for the {current} replicas starting: {why}"
        return Decision(current, reason, calm, changed=False)
    if up > current and (
        current == 0 or current < settings.min_replicas or _short(obs, settings, duration)
    ):
        if up != wanted:
            why += f", clamped to [{settings.min_replicas}, {settings.max_replicas}]"
        moved = replace(calm, last_scale_time=obs.now)
        return Decision(up, f"scale up from {current} to {up}: {why}", moved, changed=True)
    if _clamp(wanted, settings) >= current and current <= settings.max_replicas:
        return Decision(current, f"steady: {why}", calm, changed=False)
    if up == 0:
        # Down to zero only through the idle timer, which already waited.
        moved = replace(calm, last_scale_time=obs.now)
        return Decision(0, f"scale to zero from {current}: {why}", moved, changed=True)
    # The window counts from the last poll that saw work (it needed every replica then):
    # whatever emptied the queue happened since.
    opened = min(obs.now, previous_active) if previous_active is not None else obs.now
    return _scale_down(obs, settings, state, opened=opened, need=need, floor=floor, why=why)


def _scale_down(
    obs: Observation,
    settings: ScalingSettings,
    state: ScalingState,
    *,
    opened: float,
    need: int,
    floor: int,
    why: str,
) -> Decision:
    """Fewer replicas would do right now: wait out the window, then size by its mean."""
    current = obs.current_replicas
    opening = state.scale_down_since is None
    since = opened if opening else state.scale_down_since
    assert since is not None
    demand = obs.work if settings.by_backlog else obs.ack_pending
    total = demand + (0.0 if opening else state.scale_down_demand or 0.0)
    polls = 1 + (0 if opening else state.scale_down_polls or 0)
    peak = max(need, floor, 0 if opening else state.scale_down_peak or 0)
    waiting = replace(
        state,
        scale_down_since=since,
        scale_down_peak=peak,
        scale_down_demand=total,
        scale_down_polls=polls,
    )
    waited = obs.now - since
    # In-flight counts change only as fast as tasks finish: a window of a few long tasks
    # would measure noise, so it spans WINDOW_TASKS task durations at least.
    window = max(
        settings.scale_down_stabilization_seconds, WINDOW_TASKS * (state.task_seconds or 0)
    )
    legacy = not opening and state.scale_down_polls is None
    if legacy:
        # A window opened by an older operator: its peak is all there is.
        target = _clamp(peak, settings)
        basis = f"the most needed in {waited:.0f}s"
    else:
        mean = total / polls
        target = _clamp(max(_window_need(obs, settings, mean, state.task_seconds), floor), settings)
        basis = f"the mean demand of {waited:.0f}s ({mean:.1f} tasks in flight)"
    # Demand at half the replicas or less (or none at all) is no noise: that window may
    # end early.
    early = (
        not legacy
        and waited >= window * EARLY_FRACTION
        and (total == 0 or (2 * target <= current and current - target >= EARLY_MIN_STEP))
    )
    if waited < window and not early:
        reason = f"waiting {window - waited:.0f}s more before scaling down: {why}"
        return Decision(current, reason, waiting, changed=False)
    if target >= current:
        # The window's mean still needs them all: measure a fresh window.
        fresh = replace(
            state,
            scale_down_since=obs.now,
            scale_down_peak=max(need, floor),
            scale_down_demand=float(demand),
            scale_down_polls=1,
        )
        return Decision(current, f"steady: {basis} needs {target}: {why}", fresh, changed=False)
    done = ScalingState(
        last_scale_time=obs.now,
        last_active_time=state.last_active_time,
        task_seconds=state.task_seconds,
    )
    reason = f"scale down from {current} to {target}: {basis}; {why}"
    return Decision(target, reason, done, changed=True)


def _window_need(
    obs: Observation, settings: ScalingSettings, mean: float, duration: float | None
) -> int:
    """Replicas for the window's mean demand with headroom, plus what waits now."""
    if settings.by_backlog:
        replicas = mean / settings.target_backlog_per_replica
    else:
        replicas = (mean + HEADROOM * math.sqrt(mean)) / settings.slots
        per_replica = replica_rate(obs, settings, duration)
        if obs.pending and per_replica:
            replicas += obs.pending / (per_replica * settings.drain_seconds)
        elif obs.pending:
            replicas += obs.pending / settings.target_backlog_per_replica
    if obs.work > 0:
        replicas = max(replicas, 1.0)
    return math.ceil(replicas - 1e-9)
