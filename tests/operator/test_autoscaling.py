"""The autoscaling policy: a table of cases, then properties over random inputs."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bench import autoscalesim as sim
from celeriac.operator.autoscaling import (
    EARLY_FRACTION,
    EARLY_POLLS,
    WAIT_BUDGET,
    Observation,
    ScalingSettings,
    ScalingState,
    decide,
    expected_wait,
    needed_replicas,
    staffed_replicas,
    start_seconds,
    task_seconds,
)
from celeriac.protocol.resources import WorkerPoolSpec

SETTINGS = ScalingSettings(
    min_replicas=0,
    max_replicas=10,
    target_backlog_per_replica=10,
    target_drain_seconds=None,
    scale_down_stabilization_seconds=60,
    idle_before_zero_seconds=300,
)
SETTINGS_20 = replace(SETTINGS, max_replicas=20)
T0 = 1_000_000.0


def obs(pending: int, current: int, now: float = T0, ack: int = 0) -> Observation:
    return Observation(pending=pending, ack_pending=ack, current_replicas=current, now=now)


# (name, observation, settings, state, expected replicas, words expected in the reason)
CASES = [
    ("from zero at once", obs(1, 0), SETTINGS, ScalingState(), 1, "scale up"),
    ("up by backlog", obs(45, 1), SETTINGS, ScalingState(), 5, "scale up from 1 to 5"),
    ("in-flight counts", obs(0, 1, ack=30), SETTINGS, ScalingState(), 3, "30 running"),
    ("clamped to max", obs(10_000, 2), SETTINGS, ScalingState(), 10, "clamped"),
    (
        "clamped to min",
        obs(0, 2),
        replace(SETTINGS, min_replicas=3),
        ScalingState(),
        3,
        "scale up",
    ),
    ("steady", obs(30, 3), SETTINGS, ScalingState(), 3, "steady"),
    (
        "down waits for the window",
        obs(10, 5),
        SETTINGS,
        ScalingState(last_active_time=T0),
        5,
        "waiting 60s",
    ),
    (
        "down after the window to the peak",
        obs(10, 5),
        SETTINGS,
        ScalingState(last_active_time=T0, scale_down_since=T0 - 60, scale_down_peak=3),
        3,
        "scale down from 5 to 3",
    ),
    (
        "idle pool keeps one until idleBeforeZero",
        obs(0, 1, now=T0 + 299),
        SETTINGS,
        ScalingState(last_active_time=T0),
        1,
        "idleBeforeZero",
    ),
    (
        "idle pool goes to zero after idleBeforeZero",
        obs(0, 1, now=T0 + 300),
        SETTINGS,
        ScalingState(last_active_time=T0),
        0,
        "scale to zero",
    ),
    (
        "first sight of an idle pool starts the idle clock",
        obs(0, 2),
        SETTINGS,
        ScalingState(),
        2,
        "waiting",
    ),
    ("zero stays zero", obs(0, 0), SETTINGS, ScalingState(), 0, "steady"),
    (
        "a full pool with a few tasks waiting holds",
        obs(20, 3, ack=30),
        SETTINGS,
        ScalingState(task_seconds=0.2),
        3,
        "steady",
    ),
    (
        "a burst is sized by the replicas' throughput",
        obs(2000, 1, ack=10),
        SETTINGS,
        ScalingState(task_seconds=0.2),
        9,
        "scale up from 1 to 9",
    ),
    (
        "a longer drain time starts fewer replicas",
        obs(2000, 1, ack=10),
        replace(SETTINGS, target_drain_seconds=20),
        ScalingState(task_seconds=0.2),
        3,
        "need 3",
    ),
    (
        "targetBacklogPerReplica sizes by backlog alone",
        obs(2000, 1, ack=10),
        replace(SETTINGS, by_backlog=True, max_replicas=1000),
        ScalingState(task_seconds=0.2),
        201,
        "need 201",
    ),
    (
        "before any rate, replicas still starting are waited for",
        replace(obs(45, 3), completion_rate=0.0),
        SETTINGS,
        ScalingState(),
        3,
        "waiting for the 3 replicas starting",
    ),
    (
        "down to the mean demand of the window, not its peak",
        obs(0, 8, ack=15),
        SETTINGS,
        ScalingState(
            last_active_time=T0,
            task_seconds=0.2,
            scale_down_since=T0 - 60,
            scale_down_peak=8,
            scale_down_demand=29 * 20.0,
            scale_down_polls=29,
        ),
        3,
        "scale down from 8 to 3",
    ),
    (
        "the window counts from the last poll that saw work",
        obs(0, 8, now=T0 + 60),
        SETTINGS,
        ScalingState(last_active_time=T0),
        1,
        "scale down from 8 to 1",
    ),
    (
        "drain time uses the completion rate",
        replace(obs(600, 2), completion_rate=10.0),
        replace(SETTINGS, target_drain_seconds=20),
        ScalingState(),
        6,
        "need 6",
    ),
]


@pytest.mark.parametrize(
    ("obs_", "settings_", "state", "expected", "words"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_decision_table(
    obs_: Observation, settings_: ScalingSettings, state: ScalingState, expected: int, words: str
) -> None:
    decision = decide(obs_, settings_, state)
    assert decision.replicas == expected
    assert words in decision.reason
    assert decision.changed == (expected != obs_.current_replicas)


def test_drain_time_without_a_rate_falls_back_to_the_backlog_target() -> None:
    drain = replace(SETTINGS, target_drain_seconds=20)
    assert needed_replicas(obs(600, 0), drain) == 60


def test_settings_from_spec_default_the_target_to_concurrency() -> None:
    spec = WorkerPoolSpec.model_validate(
        {"queues": ["q"], "app": "m", "image": "i", "concurrency": 7, "autoscaling": {}}
    )
    resolved = ScalingSettings.from_spec(spec)
    assert resolved.target_backlog_per_replica == 7
    assert resolved.scale_down_stabilization_seconds == 60
    assert resolved.idle_before_zero_seconds == 300


def test_scale_down_state_resets_when_a_backlog_returns() -> None:
    # 30 tasks in flight on 5 replicas: fewer would do, but not half as many (no early end).
    waiting = decide(obs(0, 5, ack=30), SETTINGS, ScalingState(last_active_time=T0))
    assert waiting.state.scale_down_since == T0
    # A full pool is a random peak the window averages in...
    full = decide(obs(0, 5, now=T0 + 2, ack=50), SETTINGS, waiting.state)
    assert full.state.scale_down_since == T0
    # ... a backlog beyond its slots is not: the window starts over.
    back = decide(obs(20, 5, now=T0 + 4, ack=50), SETTINGS, full.state)
    assert back.state.scale_down_since is None
    # 30 in flight need 4 replicas once the new window's polls (EARLY_POLLS at least)
    # bound the mean closely enough, well before the window ends.
    state, replicas = back.state, []
    for now in range(6, 66, 2):
        decision = decide(obs(0, 5, now=T0 + now, ack=30), SETTINGS, state)
        state = decision.state
        replicas.append(decision.replicas)
    first = replicas.index(4)
    assert EARLY_POLLS - 1 <= first < 10
    assert replicas[:first] == [5] * first


@settings(max_examples=50)
@given(st.integers(2, 30), st.integers(0, 2**16))
def test_pools_busier_than_one_replica_less_never_scale_down(current: int, seed: int) -> None:
    """Every poll sees more tasks in flight than one replica fewer has slots: no scale-down."""
    rng = random.Random(seed)
    cfg = replace(SETTINGS, max_replicas=30)
    state = ScalingState(last_active_time=T0, task_seconds=0.2)
    for k in range(60):
        busy = rng.randint((current - 1) * 10 + 1, current * 10)
        decision = decide(obs(0, current, now=T0 + 2 * k, ack=busy), cfg, state)
        assert decision.replicas == current, decision.reason
        state = decision.state


def test_a_window_ends_early_when_half_the_replicas_would_do() -> None:
    state = ScalingState(last_active_time=T0, task_seconds=0.2)
    # 10 tasks in flight, even 3 standard errors up, need 3 of 20 replicas: at once.
    assert decide(obs(0, 20, ack=10), SETTINGS_20, state).replicas == 3
    # Not while tasks wait: those may be what the replicas are about to run.
    assert decide(obs(5, 20, ack=10), SETTINGS_20, state).replicas == 20
    # Nor when the demand needs more than half of them.
    assert decide(obs(0, 4, ack=25), SETTINGS_20, state).replicas == 4


# ---------------------------------------------------------------- properties

settings_st = st.builds(
    lambda lo, span, target, window, idle: ScalingSettings(
        min_replicas=lo,
        max_replicas=lo + span,
        target_backlog_per_replica=target,
        target_drain_seconds=None,
        scale_down_stabilization_seconds=window,
        idle_before_zero_seconds=idle,
    ),
    st.integers(0, 5),
    st.integers(1, 20),
    st.integers(1, 100),
    # Whole seconds: the policy compares times, and T0 + 1e-130 == T0 in floats.
    st.integers(0, 600).map(float),
    st.integers(0, 3600).map(float),
)
state_st = st.builds(
    ScalingState,
    last_scale_time=st.none() | st.floats(T0 - 3600, T0),
    last_active_time=st.none() | st.floats(T0 - 3600, T0),
    scale_down_since=st.none() | st.floats(T0 - 3600, T0),
    scale_down_peak=st.none() | st.integers(0, 30),
)
work_st = st.integers(0, 100_000)


@given(settings_st, state_st, work_st, st.integers(0, 30), st.integers(0, 100_000))
def test_never_outside_min_max(
    cfg: ScalingSettings, state: ScalingState, pending: int, current: int, ack: int
) -> None:
    current = max(cfg.min_replicas, min(cfg.max_replicas, current))
    decision = decide(obs(pending, current, ack=ack), cfg, state)
    assert cfg.min_replicas <= decision.replicas <= cfg.max_replicas


@given(settings_st, state_st, work_st, work_st, st.integers(0, 30))
def test_more_backlog_never_fewer_replicas(
    cfg: ScalingSettings, state: ScalingState, a: int, b: int, current: int
) -> None:
    low, high = sorted((a, b))
    assert (
        decide(obs(high, current), cfg, state).replicas
        >= decide(obs(low, current), cfg, state).replicas
    )


@given(settings_st, st.integers(1, 100_000))
def test_scale_from_zero_as_soon_as_work_appears(cfg: ScalingSettings, pending: int) -> None:
    decision = decide(obs(pending, 0), cfg, ScalingState())
    assert decision.replicas >= 1
    assert decision.changed


@settings(max_examples=50)
@given(settings_st, work_st, st.integers(0, 30), st.floats(0.5, 30))
def test_steady_load_does_not_flap(
    cfg: ScalingSettings, pending: int, start: int, step: float
) -> None:
    """Under a constant load the replica count moves in one direction at most, once."""
    state, current, now = ScalingState(), start, T0
    changes = []
    for _ in range(200):
        decision = decide(obs(pending, current, now=now), cfg, state)
        if decision.replicas != current:
            changes.append(decision.replicas - current)
        state, current, now = decision.state, decision.replicas, now + step
    # One move to the target; with minReplicas 0 an idle pool may also step 1 -> 0 later.
    assert len(changes) <= 2
    assert all(c > 0 for c in changes) or all(c < 0 for c in changes)


@settings(max_examples=8, deadline=None)
@given(st.integers(10, 500), st.integers(0, 2**16))
# A pool of two at 10 or 16 tasks in flight once stepped down to one on a few polls that
# happened to see 3-5 (the error of the observed mean, not of the true one).
@example(50, 16667)
@example(80, 1001)
def test_noisy_steady_load_does_not_flap(rate: int, seed: int) -> None:
    """Poisson arrivals at a steady rate, run task by task: no reversal once warmed up."""
    arrivals = sim.trace(f"steady-{rate}", seed, 600.0)
    pool = sim.Celeriac(sim.default_settings(max_replicas=20))
    result = sim.simulate(arrivals, pool, seed=seed, warmup=240.0, tail=0.0)
    assert result.reversals == 0, result.replica_curve


@settings(max_examples=50)
@given(
    settings_st,
    st.integers(1, 30),
    st.floats(0.01, 5.0),
    st.integers(0, 10_000).map(float),
    st.integers(0, 2**16),
)
def test_noisy_observations_around_a_steady_load_move_once_at_most(
    cfg: ScalingSettings, start: int, duration: float, load: float, seed: int
) -> None:
    """Each poll sees Poisson noise around the same load: at most one move after the first."""
    rng = random.Random(seed)
    slots = cfg.target_backlog_per_replica
    state, current, now = ScalingState(), max(cfg.min_replicas, min(cfg.max_replicas, start)), T0
    offered = load * duration  # tasks in flight on average (Little's law)
    changes = []
    for _ in range(150):
        busy = min(_poisson(rng, offered), current * slots)
        done = _poisson(rng, 2 * load) / 2
        seen = Observation(0, busy, current, now, completion_rate=done)
        decision = decide(seen, cfg, state)
        if decision.replicas != current:
            changes.append(decision.replicas - current)
        state, current, now = decision.state, decision.replicas, now + 2
    # Settling moves in one direction; noise alone never turns it back.
    assert all(c > 0 for c in changes) or all(c < 0 for c in changes)


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (normal approximation above 50, which is all the test needs)."""
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


@given(settings_st, st.integers(2, 30), st.integers(0, 99).map(lambda p: p / 100))
def test_scale_down_waits_for_the_stabilization_window(
    cfg: ScalingSettings, current: int, fraction: float
) -> None:
    cfg = replace(cfg, min_replicas=1, max_replicas=max(current, 2))
    current = min(current, cfg.max_replicas)
    state = ScalingState(last_active_time=T0)
    first = decide(obs(1, current), cfg, state)
    elapsed = cfg.scale_down_stabilization_seconds * fraction
    second = decide(obs(1, current, now=T0 + elapsed), cfg, first.state)
    if elapsed < cfg.scale_down_stabilization_seconds:
        # Nothing runs (one task waits): a window without demand ends after a quarter.
        early = fraction >= EARLY_FRACTION
        assert second.replicas == (1 if early else current)
        assert second.changed == early
    final = decide(
        obs(1, second.replicas, now=T0 + cfg.scale_down_stabilization_seconds),
        cfg,
        second.state,
    )
    assert final.replicas == 1


# ---------------------------------------------------------------- measured times

DURATION_CASES = [
    # (name, in flight before, in flight now, completion rate, estimate before, after)
    ("steady interval: Little's law", 20, 20, 100.0, None, 0.2),
    ("mean of the two ends", 16, 24, 100.0, None, 0.2),
    ("a pool starting gives no sample", 0, 60, 5.0, None, None),
    ("the end of a drain gives no sample", 200, 4, 680.0, 0.2, 0.2),
    ("nothing finished gives no sample", 10, 10, 0.0, 0.5, 0.5),
    ("no previous poll gives no sample", None, 10, 50.0, None, None),
    ("one sample moves the estimate at most two-fold", 20, 20, 10.0, 0.2, 0.2462),
]


@pytest.mark.parametrize(
    ("before", "now", "rate", "previous", "expected"),
    [c[1:] for c in DURATION_CASES],
    ids=[c[0] for c in DURATION_CASES],
)
def test_task_seconds(
    before: int | None, now: int, rate: float, previous: float | None, expected: float | None
) -> None:
    seen = replace(obs(0, 5, ack=now), completion_rate=rate, previous_in_flight=before)
    assert task_seconds(seen, previous) == expected


START_CASES = [
    # (name, ready, desired, now - scale-up, estimate before, (estimate, still starting))
    ("all ready: a sample", 4, 4, 6.0, None, (6.0, None)),
    ("some still starting: wait", 2, 4, 6.0, None, (None, T0 - 6.0)),
    ("smoothed into the estimate", 4, 4, 10.0, 5.0, (6.156, None)),
    ("readiness unknown: wait", None, 4, 6.0, 5.0, (5.0, T0 - 6.0)),
]


@pytest.mark.parametrize(
    ("ready", "desired", "ago", "previous", "expected"),
    [c[1:] for c in START_CASES],
    ids=[c[0] for c in START_CASES],
)
def test_start_seconds(
    ready: int | None,
    desired: int,
    ago: float,
    previous: float | None,
    expected: tuple[float | None, float | None],
) -> None:
    seen = replace(obs(0, desired), ready_replicas=ready)
    state = ScalingState(start_seconds=previous, starting_since=T0 - ago)
    assert start_seconds(seen, state) == expected


def test_a_scale_up_starts_the_start_clock_and_readiness_stops_it() -> None:
    state = ScalingState(task_seconds=0.2)
    up = decide(replace(obs(2000, 1, ack=10), ready_replicas=1), SETTINGS, state)
    assert up.replicas > 1 and up.state.starting_since == T0
    ready = replace(obs(0, up.replicas, now=T0 + 4, ack=10), ready_replicas=up.replicas)
    after = decide(ready, SETTINGS, up.state)
    assert after.state.start_seconds == 4.0 and after.state.starting_since is None


BURST_CASES = [
    # (name, ready replicas, arrivals per second, start estimate, replicas wanted)
    ("start unknown: the whole backlog", 2, 0.0, None, 9),
    ("ready replicas drain some before new ones start", 2, 0.0, 5.0, 7),
    ("arrivals keep the ready replicas busy", 2, 100.0, 5.0, 9),
    ("arrivals unknown: the whole backlog", 2, None, 5.0, 9),
    ("what the ready replicas clear alone needs none", 2, 0.0, 20.0, 2),
]


@pytest.mark.parametrize(
    ("ready", "arrivals", "start", "expected"),
    [c[1:] for c in BURST_CASES],
    ids=[c[0] for c in BURST_CASES],
)
def test_a_burst_leaves_the_ready_replicas_what_they_drain_while_others_start(
    ready: int, arrivals: float | None, start: float | None, expected: int
) -> None:
    # 20 running on 2 replicas (50 tasks/s each at 0.2 s), 1,750 waiting, 5 s to drain.
    seen = replace(obs(1750, 2, ack=20), ready_replicas=ready, arrival_rate=arrivals)
    assert needed_replicas(seen, SETTINGS, 0.2, start) == expected


@pytest.mark.parametrize(
    ("servers", "load", "wait"),
    [
        (1, 0.5, 1.0),  # M/M/1: rho / (1 - rho) task durations
        (2, 1.0, 1 / 3),  # M/M/2 at half load: Erlang C 1/3, one spare server
        (10, 0.0, 0.0),
        (10, 10.0, math.inf),  # as many tasks as slots: the queue never drains
        (10, 12.0, math.inf),
    ],
)
def test_expected_wait_is_erlang_c(servers: int, load: float, wait: float) -> None:
    assert expected_wait(servers, load) == pytest.approx(wait)


@pytest.mark.parametrize(
    ("load", "replicas"),
    [(0.0, 0), (1.0, 1), (8.0, 1), (9.0, 2), (15.0, 2), (30.0, 4), (50.0, 6), (100.0, 11)],
)
def test_staffed_replicas_keep_the_wait_within_the_budget(load: float, replicas: int) -> None:
    assert staffed_replicas(load, 10) == replicas
    if replicas:
        assert expected_wait(replicas * 10, load) <= WAIT_BUDGET
    if replicas > 1:
        assert expected_wait((replicas - 1) * 10, load) > WAIT_BUDGET


# ---------------------------------------------------------------- the end of a burst

POOL_20 = replace(SETTINGS, max_replicas=20, concurrency=10)
MEASURED = ScalingState(last_active_time=T0, task_seconds=0.2)


def after_full_pool(
    running: int,
    current: int,
    arrivals: float | None,
    *,
    before: int | None = None,
    now: float = T0,
) -> Observation:
    """A poll with nothing waiting after one that saw ``before`` tasks in flight (all of
    the pool's slots unless given)."""
    return replace(
        obs(0, current, now=now, ack=running),
        previous_in_flight=current * 10 if before is None else before,
        ready_replicas=current,
        arrival_rate=arrivals,
    )


TAIL_CASES = [
    # (name, in flight now, in flight before, arrivals per second, replicas wanted)
    # 3 arriving tasks in flight from one poll: 10 are within its upper bound, so 2 pods.
    ("the backlog's last tasks are no standing demand", 70, None, 15.0, 2),
    ("the arrivals' demand, 3 standard errors up", 70, None, 100.0, 4),
    ("arrivals unknown: the tasks in flight count", 70, None, None, 10),
    ("the pool was not full: the tasks in flight count", 70, 90, 15.0, 10),
    ("fewer in flight than arrive: those count", 5, None, 100.0, 2),
]


@pytest.mark.parametrize(
    ("running", "before", "arrivals", "expected"),
    [c[1:] for c in TAIL_CASES],
    ids=[c[0] for c in TAIL_CASES],
)
def test_the_poll_after_a_full_pool_counts_what_arrives(
    running: int, before: int | None, arrivals: float | None, expected: int
) -> None:
    seen = after_full_pool(running, 10, arrivals, before=before)
    assert decide(seen, POOL_20, MEASURED).replicas == expected


def burst(pre: int, state: ScalingState) -> tuple[int, ScalingState]:
    """A pool of ``pre`` replicas meets a burst: two scale-ups 2 s apart."""
    first = decide(
        replace(obs(2000, pre, ack=pre * 10), ready_replicas=pre, arrival_rate=1000.0),
        POOL_20,
        state,
    )
    second = decide(
        replace(
            obs(5000, first.replicas, now=T0 + 2, ack=pre * 10),
            ready_replicas=pre,
            arrival_rate=1500.0,
        ),
        POOL_20,
        first.state,
    )
    assert pre < first.replicas < second.replicas
    return second.replicas, second.state


def test_a_burst_remembers_the_pool_before_its_first_scale_up() -> None:
    peak, state = burst(3, MEASURED)
    assert (state.scale_up_from, state.scale_up_since) == (3, T0)
    # A scale-up a window later starts a new burst.
    later = decide(
        replace(obs(5000, peak, now=T0 + 61, ack=peak * 10), ready_replicas=peak),
        replace(POOL_20, max_replicas=30),
        state,
    )
    assert later.replicas > peak
    assert (later.state.scale_up_from, later.state.scale_up_since) == (peak, T0 + 61)


LANDING_CASES = [
    # (name, in flight and arrivals per second after the burst, seconds after its first
    # scale-up, replicas wanted)
    ("the pool before the burst carries the demand: back to it", (27, 135.0), 20, 3),
    ("the demand outgrew it: sized by the demand", (40, 175.0), 20, 6),
    ("the burst began more than a window ago: sized by the demand", (27, 135.0), 70, 5),
]


@pytest.mark.parametrize(
    ("seen", "after", "expected"),
    [c[1:] for c in LANDING_CASES],
    ids=[c[0] for c in LANDING_CASES],
)
def test_a_burst_ends_on_the_pool_that_carried_the_load_before_it(
    seen: tuple[int, float], after: float, expected: int
) -> None:
    # 3 replicas ran 27 tasks in flight (135/s at 0.2 s); one poll after the burst cannot
    # tell 3 replicas from 4 or 5 for that demand, the pool before the burst can.
    peak, state = burst(3, MEASURED)
    running, arrivals = seen
    end = decide(after_full_pool(running, peak, arrivals, now=T0 + after), POOL_20, state)
    assert end.replicas == expected, end.reason
    assert end.changed and end.state.scale_up_from is None


def test_without_a_recorded_burst_the_end_is_sized_by_the_demand() -> None:
    assert decide(after_full_pool(27, 16, 135.0), POOL_20, MEASURED).replicas == 5


def test_a_window_that_saw_no_task_ends_after_a_few_polls() -> None:
    state, replicas = ScalingState(last_active_time=T0 - 1, task_seconds=0.2), []
    for k in range(EARLY_POLLS):
        decision = decide(obs(0, 8, now=T0 + 2 * k), POOL_20, state)
        state = decision.state
        replicas.append(decision.replicas)
    # One replica stays for idleBeforeZero.
    assert replicas == [8] * (EARLY_POLLS - 1) + [1]
