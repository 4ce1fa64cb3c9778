"""The autoscaling policy: backlog observations in, a replica count and its reason out.

A pure function, so every rule is table-tested without a cluster or a broker:

* the result always lies in ``[minReplicas, maxReplicas]``;
* scale up at once when the work needs at least half a replica more than the pool has
  (from zero as soon as work appears): the replicas busy now, plus enough to drain within
  ``targetDrainTime`` what the ready replicas leave of the backlog by the time a new one
  has started (both rates and the start time measured); before any rate is known,
  ``targetBacklogPerReplica`` tasks per replica;
* a full pool with a few tasks waiting is not "more work": only tasks beyond its slots
  that would wait longer than a task runs (at least a second) at its full rate are, which
  keeps the random peaks of a noisy steady load from flapping it;
* scale down to the fewest replicas whose expected queueing delay (Erlang C) is within
  WAIT_BUDGET task durations for the *mean* tasks in flight of the stabilization window,
  at its Poisson upper confidence limit LOAD_SIGMAS standard errors high (a window of a
  few polls is not trusted to have seen a low mean) -- not a peak remembered while a backlog
  drained; a window ends early when half the replicas or fewer would do and nothing
  waits (the end of a burst), after EARLY_POLLS polls when fewer would do even
  EARLY_SIGMAS standard errors up, after EARLY_POLLS polls (or a quarter of it) when it
  saw no task, and lasts 20 task durations at least for long tasks;
* at a burst's end, the poll after a full pool counts only what arrives as demand, and
  the pool returns to its size before the burst when the mean demand fits it;
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
# A window without demand ends after EARLY_POLLS polls or this fraction of it.
EARLY_FRACTION = 0.25
# A window whose demand, this many standard errors up (stricter than LOAD_SIGMAS: such
# a window is tested every poll, not once), needs fewer replicas ends after EARLY_POLLS.
EARLY_POLLS = 3
EARLY_SIGMAS = 4.0
# The scale-down window lasts at least this many mean task durations.
WINDOW_TASKS = 20.0
# Tasks beyond the slots trigger a scale-up once they would wait this long (or a task's
# duration, if longer) at the pool's full rate.
UP_WAIT_SECONDS = 1.0
# Before any rate is measured, a scale-up needs this many standard deviations of the
# pool's own noise in tasks beyond its slots.
UP_NOISE = 3.0
# The standing pool is the fewest replicas whose expected queueing delay (Erlang C, for
# the window's mean tasks in flight) is at most this many task durations.
WAIT_BUDGET = 0.5
# ... for the window's mean plus this many standard errors of it: a pool sized for a
# mean that came out low by chance would overflow and scale back up (a flap).
LOAD_SIGMAS = 3.0
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
    # Tasks finished per second by the whole pool since the previous poll, when known.
    completion_rate: float | None = None
    # Tasks in flight at the previous poll, when known.
    previous_in_flight: int | None = None
    # Replicas ready to work (the rest of current_replicas are starting), when known.
    ready_replicas: int | None = None
    # Tasks arriving per second since the previous poll, when known.
    arrival_rate: float | None = None

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
    # Seconds from a scale-up to its replicas being ready, smoothed; and the time of the
    # scale-up still waiting for its replicas.
    start_seconds: float | None = None
    starting_since: float | None = None
    # Replicas before the first scale-up of the current burst, and when it was.
    scale_up_from: int | None = None
    scale_up_since: float | None = None


@dataclass(frozen=True)
class Decision:
    """Replicas to run now, why, and the state to remember."""

    replicas: int
    reason: str
    state: ScalingState
    changed: bool


def task_seconds(obs: Observation, previous: float | None) -> float | None:
    """The task-duration estimate after this poll (in flight / completion rate, smoothed).

    Little's law holds over an interval whose tasks in flight held roughly steady: one
    that began with none (a pool starting, a burst landing on an idle one) or ended a
    drain (the last few tasks of many just finished) says nothing of how long tasks run,
    and gives no sample. One sample moves the estimate at most DURATION_STEP-fold.
    """
    rate, before, now = obs.completion_rate, obs.previous_in_flight, obs.ack_pending
    if rate is None or rate <= 0 or before is None or 2 * min(before, now) < max(before, now):
        return previous
    sample = (before + now) / 2 / rate
    if sample <= 0:
        return previous
    return _smoothed(previous, sample)


def start_seconds(obs: Observation, state: ScalingState) -> tuple[float | None, float | None]:
    """The pod start-time estimate after this poll, and the scale-up still starting.

    The poll that first sees every replica of the last scale-up ready gives a sample: the
    time since that scale-up (at most a poll interval long).
    """
    since, previous = state.starting_since, state.start_seconds
    ready = obs.ready_replicas
    if since is None or ready is None or ready < obs.current_replicas:
        return previous, since
    return _smoothed(previous, max(obs.now - since, 0.0)), None


def _smoothed(previous: float | None, sample: float) -> float:
    """``sample`` moved into ``previous`` with DURATION_SMOOTHING weight, in log space."""
    if previous is None or previous <= 0 or sample <= 0:
        return float(f"{sample:.4g}")
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


def needed(
    obs: Observation,
    settings: ScalingSettings,
    duration: float | None = None,
    start: float | None = None,
) -> float:
    """Replicas (fractional) the work calls for now: busy ones plus the backlog's drain.

    A replica added now works only once it has started (``start`` seconds, when
    measured): the backlog it drains is what the ready replicas, beyond keeping up with
    the tasks arriving, leave by then.
    """
    if settings.by_backlog:
        return obs.work / settings.target_backlog_per_replica
    per_replica = replica_rate(obs, settings, duration)
    if per_replica is None:
        # Cold start: nothing measured yet.
        return obs.work / settings.target_backlog_per_replica
    backlog = float(obs.pending)
    if start and obs.ready_replicas and obs.arrival_rate is not None:
        spare = obs.ready_replicas * per_replica - obs.arrival_rate
        backlog = max(0.0, backlog - max(0.0, spare) * start)
    return obs.ack_pending / settings.slots + backlog / (per_replica * settings.drain_seconds)


def needed_replicas(
    obs: Observation,
    settings: ScalingSettings,
    duration: float | None = None,
    start: float | None = None,
) -> int:
    """Replicas the current work calls for, before clamping (0 when there is no work)."""
    if obs.work <= 0:
        return 0
    return max(1, math.ceil(needed(obs, settings, duration, start) - 1e-9))


def _clamp(value: int, settings: ScalingSettings) -> int:
    return max(settings.min_replicas, min(settings.max_replicas, value))


def _idle_floor(obs: Observation, settings: ScalingSettings, last_active: float | None) -> int:
    """1 while an idle pool with minReplicas 0 waits out idleBeforeZero, else 0."""
    if obs.work > 0 or obs.current_replicas == 0 or last_active is None:
        return 0
    idle = obs.now - last_active
    return 1 if idle < settings.idle_before_zero_seconds else 0


def _short(
    obs: Observation, settings: ScalingSettings, duration: float | None, start: float | None
) -> bool:
    """The pool is short of replicas: the work needs half a replica more than it has, and
    the tasks beyond its slots are no random peak of a steady load. With a measured rate
    that means they would wait longer than a task runs (at least UP_WAIT_SECONDS) at the
    pool's full rate; before one, more than UP_NOISE standard deviations of a Poisson count
    the size of its slots."""
    current = obs.current_replicas
    beyond = obs.work - current * settings.slots
    if needed(obs, settings, duration, start) <= current + UP_SLACK or beyond <= 0:
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
    start, starting = start_seconds(obs, state)
    state = replace(
        state,
        last_active_time=last_active,
        task_seconds=duration,
        start_seconds=start,
        starting_since=starting,
    )
    current = obs.current_replicas
    floor = _idle_floor(obs, settings, last_active)
    need = needed_replicas(obs, settings, duration, start)
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
        current == 0 or current < settings.min_replicas or _short(obs, settings, duration, start)
    ):
        if up != wanted:
            why += f", clamped to [{settings.min_replicas}, {settings.max_replicas}]"
        moved = replace(calm, last_scale_time=obs.now, starting_since=obs.now)
        if _pool_before_burst(obs, settings, state) is None:
            moved = replace(moved, scale_up_from=current, scale_up_since=obs.now)
        return Decision(up, f"scale up from {current} to {up}: {why}", moved, changed=True)
    # A backlog beyond the pool's slots is being drained, not standing demand: it keeps
    # the window shut. A full pool without one is a random peak the window averages in.
    backlog = obs.work > current * settings.slots and not settings.by_backlog
    if current <= settings.max_replicas and (
        backlog
        or (
            _clamp(wanted, settings) >= current
            and (settings.by_backlog or current <= max(settings.min_replicas, 1))
        )
    ):
        return Decision(current, f"steady: {why}", calm, changed=False)
    if up == 0:
        # Down to zero only through the idle timer, which already waited.
        moved = replace(calm, last_scale_time=obs.now, starting_since=None)
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
    demand, tail = _window_sample(obs, settings, state.task_seconds, opening=opening)
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
    window = _window_seconds(settings, state.task_seconds)
    legacy = not opening and state.scale_down_polls is None
    seen = total > 0 or tail
    if legacy:
        # A window opened by an older operator: its peak is all there is.
        target = _clamp(peak, settings)
        basis = f"the most needed in {waited:.0f}s"
    else:
        mean = total / polls
        # A window that saw no task at all asks for none (the idle rules take it on).
        bounded = seen and not settings.by_backlog
        load = _load_bound(mean, polls, waited, state.task_seconds) if bounded else mean
        target = _clamp(max(_window_need(obs, settings, load, state.task_seconds), floor), settings)
        basis = f"the mean demand of {waited:.0f}s ({mean:.1f} tasks in flight)"
    # A window that saw no task ends after EARLY_POLLS polls or a quarter of it. So does
    # demand that needs fewer replicas while nothing waits: at once when half of them or
    # fewer would do (the end of a burst), else after EARLY_POLLS polls if it does
    # EARLY_SIGMAS standard errors up.
    burst_end = not legacy and seen and obs.pending == 0 and 2 * target <= current
    if burst_end:
        need_mean = max(_window_need(obs, settings, total / polls, state.task_seconds), floor)
        before = _pool_before_burst(obs, settings, state)
        if before is not None and need_mean <= before:
            # One poll measures the standing demand too loosely to tell N replicas from
            # N+1; sized by it, the pool would hold the extra one until a whole window
            # showed it idle. The pool that carried the load before the burst is the
            # better guess while the mean demand fits it.
            target = min(target, _clamp(before, settings))
    early = (
        burst_end
        or (not legacy and not seen and (polls >= EARLY_POLLS or waited >= window * EARLY_FRACTION))
        or (
            not legacy
            and seen
            and obs.pending == 0
            and _sure_fewer(
                obs, settings, state.task_seconds, window=(total, polls, waited), floor=floor
            )
        )
    )
    if waited < window and not early:
        reason = (
            f"steady: {why}"
            if need >= current
            else f"waiting {window - waited:.0f}s more before scaling down: {why}"
        )
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
        start_seconds=state.start_seconds,
    )
    reason = f"scale down from {current} to {target}: {basis}; {why}"
    return Decision(target, reason, done, changed=True)


def _window_seconds(settings: ScalingSettings, duration: float | None) -> float:
    """The scale-down window. In-flight counts change only as fast as tasks finish: a
    window of a few long tasks would measure noise, so it spans WINDOW_TASKS task
    durations at least."""
    return max(settings.scale_down_stabilization_seconds, WINDOW_TASKS * (duration or 0))


def _window_sample(
    obs: Observation, settings: ScalingSettings, duration: float | None, *, opening: bool
) -> tuple[float, bool]:
    """This poll's demand for the scale-down window, and whether it is a drain's tail.

    The first poll after a full pool may see the last of a drained backlog still running:
    its standing demand is at most what arrives (Little's law: arrival rate x task
    duration).
    """
    if settings.by_backlog:
        return float(obs.work), False
    before, rate = obs.previous_in_flight, obs.arrival_rate
    if (
        not opening
        or before is None
        or before < obs.current_replicas * settings.slots
        or rate is None
        or not duration
    ):
        return float(obs.ack_pending), False
    return min(float(obs.ack_pending), rate * duration), True


def _pool_before_burst(
    obs: Observation, settings: ScalingSettings, state: ScalingState
) -> int | None:
    """The replicas before the current burst's first scale-up, if that was within the
    scale-down window (None: no burst under way)."""
    before, since = state.scale_up_from, state.scale_up_since
    if before is None or since is None:
        return None
    return before if obs.now - since <= _window_seconds(settings, state.task_seconds) else None


def _sure_fewer(
    obs: Observation,
    settings: ScalingSettings,
    duration: float | None,
    *,
    window: tuple[float, int, float],
    floor: int,
) -> bool:
    """Fewer replicas would do even for the window's mean EARLY_SIGMAS standard errors up
    (``window``: its summed demand, polls and length)."""
    total, polls, waited = window
    if settings.by_backlog or polls < EARLY_POLLS:
        return False
    load = _load_bound(total / polls, polls, waited, duration, EARLY_SIGMAS)
    need = max(_window_need(obs, settings, load, duration), floor)
    return _clamp(need, settings) < obs.current_replicas


def _load_bound(
    mean: float, polls: int, waited: float, duration: float | None, sigmas: float = LOAD_SIGMAS
) -> float:
    """An upper bound, ``sigmas`` standard errors high, on the window's mean tasks in flight.

    Tasks in flight at one poll are a Poisson count, so n independent polls sum to one
    with n times the mean; polls closer together than a task runs see the same tasks,
    so n is at most the window's length in task durations. The bound is the Poisson
    count's upper confidence limit (Wilson-Hilferty), not the mean plus the error
    of the observed mean: that one falls short when a few polls happen to see little
    (5 tasks where 10 run on average), and a pool of two stepped down to one it could
    not carry.
    """
    n = float(polls)
    if duration:
        n = min(n, waited / duration)
    n = max(n, 1.0)
    k = mean * n + 1.0
    return k * (1.0 - 1.0 / (9.0 * k) + sigmas / (3.0 * math.sqrt(k))) ** 3 / n


def _erlang_b(servers: int, load: float, start: tuple[int, float] = (0, 1.0)) -> float:
    """Erlang B blocking probability by its recursion (stable for large pools), carried on
    from ``start`` (servers, blocking) so a search over pool sizes runs it once."""
    done, blocked = start
    for k in range(done + 1, servers + 1):
        blocked = load * blocked / (k + load * blocked)
    return blocked


def _wait_from_blocking(servers: int, load: float, blocked: float) -> float:
    """Erlang C from Erlang B, divided by the spare slots: the mean wait in task durations."""
    if load >= servers:
        return math.inf
    waiting = servers * blocked / (servers - load * (1 - blocked))
    return waiting / (servers - load)


def expected_wait(servers: int, load: float) -> float:
    """Mean queueing delay, in task durations, of ``load`` tasks in flight on average
    (arrival rate x task duration) spread over ``servers`` slots: Erlang C divided by the
    spare slots (M/M/c). Infinite when the slots cannot keep up."""
    if load <= 0:
        return 0.0
    return _wait_from_blocking(servers, load, _erlang_b(servers, load))


def staffed_replicas(load: float, slots: int, budget: float | None = None) -> int:
    """The fewest replicas of ``slots`` slots keeping the expected wait of ``load`` tasks
    in flight on average within ``budget`` task durations (0 for no load)."""
    if load <= 0:
        return 0
    budget = WAIT_BUDGET if budget is None else budget
    replicas = max(1, math.ceil(load / slots - 1e-9))
    servers = replicas * slots
    blocked = _erlang_b(servers, load)
    while _wait_from_blocking(servers, load, blocked) > budget:
        replicas += 1
        blocked = _erlang_b(replicas * slots, load, (servers, blocked))
        servers = replicas * slots
    return replicas


def _window_need(
    obs: Observation, settings: ScalingSettings, mean: float, duration: float | None
) -> int:
    """Replicas for the window's mean demand with headroom, plus what waits now."""
    if settings.by_backlog:
        replicas = mean / settings.target_backlog_per_replica
    else:
        replicas = float(staffed_replicas(mean, settings.slots))
        per_replica = replica_rate(obs, settings, duration)
        if obs.pending and per_replica:
            replicas += obs.pending / (per_replica * settings.drain_seconds)
        elif obs.pending:
            replicas += obs.pending / settings.target_backlog_per_replica
    if obs.work > 0:
        replicas = max(replicas, 1.0)
    return math.ceil(replicas - 1e-9)
