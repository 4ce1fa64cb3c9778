"""Status bookkeeping and the Lease rule (pure)."""

from __future__ import annotations

import pytest

from celeriac.operator.autoscaling import Decision, ScalingState
from celeriac.operator.leadership import lease_available, micro_time, parse_time
from celeriac.operator.status import (
    changed_fields,
    condition,
    from_iso,
    iso,
    merge_conditions,
    scaling_state,
    scaling_status,
)

T = 1_700_000_000.0


def test_iso_round_trip() -> None:
    assert iso(T) == "2023-11-14T22:13:20Z"
    assert from_iso(iso(T)) == T
    assert from_iso(None) is None
    assert from_iso("garbage") is None


def test_transition_time_kept_while_status_holds() -> None:
    first = merge_conditions(None, [condition("Ready", True, "Ok", "fine")], T)
    same = merge_conditions(first, [condition("Ready", True, "Ok", "still fine")], T + 60)
    assert same[0]["lastTransitionTime"] == iso(T)
    assert same[0]["message"] == "still fine"
    flipped = merge_conditions(same, [condition("Ready", False, "Bad", "broken")], T + 120)
    assert flipped[0]["lastTransitionTime"] == iso(T + 120)


def test_other_conditions_are_kept() -> None:
    both = merge_conditions(
        [{"type": "Synced", "status": "True"}], [condition("Ready", True, "Ok", "")], T
    )
    assert [c["type"] for c in both] == ["Synced", "Ready"]


def test_changed_fields() -> None:
    assert changed_fields({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": None}) == {"b": 3}
    assert changed_fields(None, {"a": 1}) == {"a": 1}


def test_scaling_state_round_trips_through_status() -> None:
    state = ScalingState(
        last_scale_time=T,
        last_active_time=T + 1,
        scale_down_since=T + 2,
        scale_down_peak=3,
        scale_down_demand=41.0,
        scale_down_polls=7,
        task_seconds=0.25,
        start_seconds=6.0,
        starting_since=T + 3,
        scale_up_from=2,
        scale_up_since=T + 4,
    )
    status = scaling_status(Decision(replicas=4, reason="why", state=state, changed=True))
    assert status["desiredReplicas"] == 4
    assert status["lastScaleReason"] == "why"
    assert scaling_state(status) == state
    quiet = scaling_status(Decision(4, "steady", ScalingState(), changed=False))
    assert "lastScaleReason" not in quiet
    assert quiet["scaleDownSince"] is None


@pytest.mark.parametrize(
    ("holder", "renewed", "now", "expected"),
    [
        (None, None, T, True),
        ("me", T, T + 1, True),
        ("other", T, T + 10, False),
        ("other", T, T + 16, True),
        ("other", None, T, True),
    ],
)
def test_lease_available(
    holder: str | None, renewed: float | None, now: float, expected: bool
) -> None:
    assert lease_available(holder, renewed, 15, "me", now) is expected


def test_micro_time_parses_back() -> None:
    assert parse_time(micro_time(T + 0.5)) == T + 0.5


def test_status_update_holds_only_what_changed() -> None:
    from celeriac.operator.status import condition, status_update

    ready = condition("Ready", True, "Synced", "all good")
    first = status_update(None, {"backlog": 3}, [ready], now=1000.0)
    assert first["backlog"] == 3 and first["conditions"][0]["type"] == "Ready"
    # Same fields and condition again: nothing to patch.
    assert status_update(first, {"backlog": 3}, [ready], now=2000.0) == {}
    assert status_update(first, {"backlog": 4}, [], now=2000.0) == {"backlog": 4}
