"""Comparing replica curves (the autoscale-replay report) on made-up curves."""

from __future__ import annotations

import math

import pytest

from bench import autoscalereplay as ar
from bench import replaycompare as rc
from bench.autoscalesim import simulate
from celeriac.protocol.resources import WorkerPoolSpec
from tests.bench.test_autoscalesim import Fixed

# 0 until 10 s, 3 from 10 s, 5 from 12 s, 1 from 40 s, 0 from 70 s.
CURVE = [(0.0, 0), (10.0, 3), (12.0, 5), (40.0, 1), (70.0, 0)]


@pytest.mark.parametrize(
    ("t", "level"),
    [(-1.0, 0), (0.0, 0), (9.9, 0), (10.0, 3), (11.0, 3), (12.0, 5), (45.0, 1), (100.0, 0)],
)
def test_level_at(t: float, level: int) -> None:
    assert rc.level_at(CURVE, t) == level


def test_steps_keep_only_changes() -> None:
    samples = [(0.0, 0), (0.5, 0), (1.0, 2), (1.5, 2), (2.0, 1), (2.5, 1)]
    assert rc.steps(samples) == [(0.0, 0), (1.0, 2), (2.0, 1)]
    assert rc.steps([]) == []


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0.0, 10.0, 0.0),
        (0.0, 12.0, 6.0),
        (0.0, 40.0, 6.0 + 28 * 5),
        (0.0, 100.0, 6.0 + 140 + 30),
        (11.0, 13.0, 3.0 + 5.0),
    ],
)
def test_integral(start: float, end: float, expected: float) -> None:
    assert rc.integral(CURVE, end, start) == pytest.approx(expected)


def test_bursts_split_on_gaps() -> None:
    arrivals = [5.0, 5.5, 6.0, 30.0, 31.0, 31.5, 80.0]
    assert rc.bursts(arrivals, gap=20.0) == [(5.0, 6.0), (30.0, 31.5), (80.0, 80.0)]
    assert rc.bursts(arrivals, gap=30.0) == [(5.0, 31.5), (80.0, 80.0)]
    assert rc.bursts([]) == []


def test_burst_marks_time_up_peak_and_back_down() -> None:
    marks = rc.burst_marks(CURVE, (8.0, 10.0), window_end=100.0)
    assert marks == rc.BurstMarks(
        first_scale_up_s=2.0, peak_replicas=5, to_one_s=30.0, to_zero_s=60.0
    )


def test_burst_marks_without_reaction_or_return() -> None:
    # The next burst comes before the pool is back to one: no time to one or zero.
    marks = rc.burst_marks(CURVE, (8.0, 10.0), window_end=35.0)
    assert marks.to_one_s is None and marks.to_zero_s is None
    flat = rc.burst_marks([(0.0, 2)], (5.0, 6.0), window_end=50.0)
    assert flat == rc.BurstMarks(None, 2, None, None)


def test_burst_marks_of_a_pool_that_stays_small() -> None:
    marks = rc.burst_marks([(0.0, 0), (3.0, 1), (20.0, 0)], (1.0, 2.0), window_end=50.0)
    assert marks == rc.BurstMarks(2.0, 1, 1.0, 18.0)


def test_deviation_of_a_curve_with_itself_is_zero() -> None:
    dev = rc.deviation(CURVE, CURVE, 100.0)
    assert dev == rc.Deviation(0.0, 0, 1.0, 100.0)


def test_deviation_of_a_late_copy() -> None:
    late = [(t + 2.0, v) for t, v in CURVE]
    dev = rc.deviation(late, CURVE, 100.0)
    # Each of the 4 steps differs for 2 of the 100 grid points by its height.
    assert dev.mean_abs_diff == pytest.approx((2 * 3 + 2 * 2 + 2 * 4 + 2 * 1) / 100)
    assert dev.max_abs_diff == 4
    assert dev.replica_s_ratio == pytest.approx(
        rc.integral(late, 100.0) / rc.integral(CURVE, 100.0)
    )
    assert dev.within_one_pct == pytest.approx(100 - 2 - 2 - 2)


def test_deviation_against_an_empty_simulation() -> None:
    assert math.isinf(rc.deviation(CURVE, [(0.0, 0)], 50.0).replica_s_ratio)


def test_rise_latencies() -> None:
    desired = [(0.0, 0), (10.0, 3), (30.0, 5), (50.0, 2), (60.0, 6), (61.0, 1)]
    reached = [(0.0, 0), (11.0, 2), (12.5, 3), (33.0, 5), (51.0, 2), (62.0, 6)]
    # The rise at 60 s is overtaken by the drop at 61 s before it is reached (62 s).
    assert rc.rise_latencies(desired, reached) == [2.5, 3.0]
    assert rc.rise_latencies(desired, reached, from_zero_only=True) == [2.5]


def test_replay_trace_and_durations_are_seeded() -> None:
    arrivals = rc.replay_trace(4, bursts=3, sizes=(100, 200))
    assert arrivals == rc.replay_trace(4, bursts=3, sizes=(100, 200))
    assert arrivals != rc.replay_trace(5, bursts=3, sizes=(100, 200))
    assert arrivals == sorted(arrivals)
    assert len(rc.bursts(arrivals)) == 3
    assert 300 <= len(arrivals) <= 600
    durations = rc.task_durations(5000, 0.2, seed=2)
    assert durations == rc.task_durations(5000, 0.2, seed=2)
    assert sum(durations) / len(durations) == pytest.approx(0.2, rel=0.1)


def test_report_rows() -> None:
    arrivals = [8.0, 9.0, 10.0, 50.0, 51.0]
    sim = [(0.0, 0), (10.0, 2), (30.0, 0), (52.0, 1), (80.0, 0)]
    rows = rc.report_rows({"real": CURVE, "simulated": sim}, arrivals, end=100.0)
    cases = [(r["contender"], r["case"]) for r in rows]
    assert cases == [
        ("real", "burst 1 at 8s"),
        ("real", "burst 2 at 50s"),
        ("real", "whole run (100s)"),
        ("simulated", "burst 1 at 8s"),
        ("simulated", "burst 2 at 50s"),
        ("simulated", "whole run (100s)"),
    ]
    assert rows[0]["metrics"] == {
        "tasks": 3.0,
        "first_scale_up_s": 2.0,
        "peak_replicas": 5.0,
        "to_one_s": 30.0,
    }  # the second burst comes before the pool is back to zero
    assert rows[2]["metrics"] == {"replica_s": pytest.approx(rc.integral(CURVE, 100.0))}
    assert rows[3]["metrics"] == {
        "tasks": 3.0,
        "first_scale_up_s": 2.0,
        "peak_replicas": 2.0,
        "to_one_s": 20.0,
        "to_zero_s": 20.0,
    }
    assert rows[4]["metrics"]["to_zero_s"] == 29.0


def test_shift() -> None:
    assert rc.shift([(0.0, 0), (2.0, 3)], 1.5) == [(1.5, 0), (3.5, 3)]


def test_capacity_latencies_time_new_pods_taking_work() -> None:
    desired = [(0.0, 0), (10.0, 2), (11.0, 4), (30.0, 1), (40.0, 3), (41.0, 0)]
    in_flight = [(0.0, 0), (10.5, 5), (12.0, 20), (13.0, 30), (31.0, 2), (50.0, 25)]
    # 0 -> 2 at 10 s: work from 10.5 s; 2 -> 4 at 11 s: more than 20 run from 13 s;
    # 1 -> 3 at 40 s is overtaken by the drop at 41 s.
    assert rc.capacity_latencies(desired, in_flight, slots=10) == [(2, 0.5), (2, 2.0)]


@pytest.mark.parametrize(
    ("points", "line"),
    [
        ([], (0.0, 0.0)),
        ([(3, 1.0), (3, 2.0), (3, 4.0)], (2.0, 0.0)),
        ([(1, 0.5), (2, 0.75), (4, 1.25)], (0.25, 0.25)),
        ([(1, 2.0), (4, 1.0)], (1.5, 0.0)),  # falling: no line, the median
        ([(1, 0.1), (3, 1.1)], (0.0, 0.5)),  # the intercept is not below zero
    ],
)
def test_latency_line(points: list[tuple[int, float]], line: tuple[float, float]) -> None:
    assert rc.latency_line(points) == pytest.approx(line)


def test_simulator_takes_a_start_latency_per_pod_count() -> None:
    calls: list[int] = []

    def latency(pods: int) -> float:
        calls.append(pods)
        return 1.0 * pods

    res = simulate([0.5], Fixed({1: 3}), start_latency=latency, tail=10.0)
    assert calls == [3]
    # The task waits for the first pod: ready 3 s after the scale-up at 1 s.
    assert res.delays == [pytest.approx(3.5)]


def test_analyse_made_up_samples() -> None:
    arrivals = rc.replay_trace(1, bursts=1, sizes=(300, 300), first=(10.0, 10.0))
    samples = []
    for k in range(240):
        t = k * 0.25
        desired = 6 if 11.0 <= t < 30.0 else (1 if 30.0 <= t < 45.0 else 0)
        running = 60 if 12.5 <= t < 16.0 else 0
        samples.append(ar.Sample(t, desired, desired, desired, desired, 0, running, 0.5))
    spec = WorkerPoolSpec.model_validate(ar.pool_object("p", "ns")["spec"])
    rows, details = ar.analyse(samples, arrivals, spec, end=60.0)
    env = rows[-1]["metrics"]
    # One scale-up of 6 pods from zero, the first task 1.5 s later.
    assert details["start_points"] == [(6, 1.5)]
    assert (env["start_a_s"], env["start_b_s_per_pod"]) == (1.5, 0.0)
    assert env["first_task_median_s"] == 1.5
    assert env["task_in_flight_mean_s"] == pytest.approx(60 * 3.5 / 300, abs=1e-3)
    real = [r for r in rows if r["contender"] == "real"]
    assert real[0]["metrics"]["peak_replicas"] == 6.0
    assert real[0]["metrics"]["to_zero_s"] == pytest.approx(45.0 - arrivals[-1], abs=0.05)
    assert real[-1]["metrics"]["replica_s"] == pytest.approx(6 * 19 + 15)
    assert {r["contender"] for r in rows if r["case"] == "deviation"} == {
        "real vs simulated, start 1.50+0.00/pod s",
        "real vs simulated, start 1.50 s",
    }
    assert set(details["curves"]) == {
        "real",
        "simulated, start 1.50+0.00/pod s",
        "simulated, start 1.50 s",
    }
