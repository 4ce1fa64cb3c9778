"""The autoscaling simulator's bookkeeping on short seeded traces (not the policy's scores)."""

from __future__ import annotations

import pytest

from bench import autoscalesim as sim
from bench.autoscalesim import Keda, PoolView


class Fixed:
    """A controller that asks for a set replica count at set times."""

    name = "fixed"
    interval = 1.0

    def __init__(self, plan: dict[float, int]) -> None:
        self.plan = plan
        self.replicas = 0

    def tick(self, view: PoolView) -> int:
        self.replicas = self.plan.get(round(view.now), self.replicas)
        return self.replicas


def test_traces_are_seeded_sorted_and_distinct() -> None:
    for name in sim.TRACES:
        first = sim.trace(name, 3, 300.0)
        assert first == sim.trace(name, 3, 300.0)
        assert first == sorted(first)
        assert all(0 <= t < 300 for t in first)
    assert sim.trace("bursty", 1, 600.0) != sim.trace("bursty", 2, 600.0)
    with pytest.raises(ValueError, match="unknown trace"):
        sim.trace("nope")


def test_every_task_runs_once_and_waits_for_a_pod() -> None:
    arrivals = [float(t) / 10 for t in range(100)]  # 100 tasks over 10 s
    result = sim.simulate(arrivals, Fixed({2: 2, 30: 0}), start_latency=5.0, tail=40.0, warmup=0.0)
    assert result.tasks == 100
    # Nothing runs before the pods, asked for at t=2, are ready at t=7.
    first = min(a + d for a, d in zip(arrivals, result.delays, strict=True))
    assert first >= 7.0
    assert result.replica_curve == [(0.0, 0), (2.0, 2), (30.0, 0)]
    # Two pods billed from the request to their removal, idle or not.
    assert result.replica_seconds == pytest.approx(2 * 28.0)
    assert result.pods_started == 2
    assert result.scale_events == 2
    # The scale-down after the last arrival is the tail, not a flap.
    assert result.reversals == 0


def test_a_removed_pod_finishes_its_tasks_and_is_billed_until_then() -> None:
    arrivals = [1.5 + i / 1000 for i in range(10)]
    result = sim.simulate(
        arrivals,
        Fixed({1: 1, 3: 0}),
        start_latency=0.0,
        mean_task=50.0,
        tail=1000.0,
        warmup=0.0,
    )
    # Asked to go at t=3 while running long tasks: billed past that, until the last one ends.
    assert result.tasks == 10
    assert result.replica_curve == [(0.0, 0), (1.0, 1), (3.0, 0)]
    assert result.replica_seconds > 2.0 + 10.0
    assert result.work_seconds > result.replica_seconds


def test_time_to_one_after_a_quiet_gap() -> None:
    arrivals = [1.0, 1.1, 1.2]
    result = sim.simulate(
        [*arrivals, 200.0], Fixed({2: 3, 50: 1}), start_latency=0.0, tail=10.0, warmup=0.0
    )
    # The queue empties when the last task before the gap starts (t=2, when pods are ready);
    # after the last arrival the pool is already at one.
    assert result.time_to_one == [pytest.approx(48.0), 0.0]


def test_keda_model_follows_its_documented_defaults() -> None:
    keda = Keda(max_replicas=20)

    def view(now: float, lag: int, replicas: int) -> PoolView:
        return PoolView(now, lag, 0, replicas, 0, lag, replicas)

    # Activation only on a KEDA poll (every 30 s), then the HPA: at most max(2x, +4) a sync.
    assert keda.tick(view(15.0, 500, 0)) == 0
    assert keda.tick(view(30.0, 500, 0)) == 1
    assert keda.tick(view(45.0, 500, 1)) == 5
    assert keda.tick(view(60.0, 500, 5)) == 10
    # Within the 10% tolerance of lagThreshold 10 per replica: unchanged.
    assert keda.tick(view(75.0, 105, 10)) == 10
    # Scale down waits for the 300 s window's highest recommendation to fall.
    assert keda.tick(view(90.0, 10, 10)) == 10
    assert keda.tick(view(300.0, 10, 10)) == 10
    assert keda.tick(view(390.0, 10, 10)) == 1
    # Inactive for the cooldown (300 s since the last active poll): to zero.
    assert keda.tick(view(420.0, 0, 1)) == 1
    assert keda.tick(view(720.0, 0, 1)) == 0


def test_celeriac_controller_calls_the_real_policy() -> None:
    arrivals = sim.trace("steady-50", 1, 300.0)
    result = sim.simulate(arrivals, sim.controllers()["celeriac"](), tail=30.0, warmup=0.0)
    assert result.tasks == len(arrivals)
    assert result.replica_curve[1][0] == 2.0  # first poll at the operator's 2 s
    assert 0 < result.work_seconds < result.replica_seconds * 10
