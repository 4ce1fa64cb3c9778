"""The autoscaling policy: a table of cases, then properties over random inputs."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celeriac.operator.autoscaling import (
    Observation,
    ScalingSettings,
    ScalingState,
    decide,
    needed_replicas,
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


def test_scale_down_state_resets_when_work_returns() -> None:
    waiting = decide(obs(10, 5), SETTINGS, ScalingState(last_active_time=T0))
    assert waiting.state.scale_down_since == T0
    back = decide(obs(50, 5, now=T0 + 30), SETTINGS, waiting.state)
    assert back.state.scale_down_since is None
    # The window starts over: 40 s later is not enough.
    again = decide(obs(10, 5, now=T0 + 40), SETTINGS, back.state)
    later = decide(obs(10, 5, now=T0 + 80), SETTINGS, again.state)
    assert later.replicas == 5


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
        assert second.replicas == current
        assert not second.changed
    final = decide(
        obs(1, current, now=T0 + cfg.scale_down_stabilization_seconds), cfg, second.state
    )
    assert final.replicas == 1
