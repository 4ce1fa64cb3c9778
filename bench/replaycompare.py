"""Comparing two replica curves of one trace: the real control plane's and the simulator's.

Pure functions on step curves (``[(t, replicas)]``, sorted by time, each value holding
until the next point) and arrival times, so the report is tested on made-up curves.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Curve = Sequence[tuple[float, int]]
# Arrivals further apart than this start a new burst.
BURST_GAP = 20.0


def replay_trace(
    seed: int = 1,
    *,
    bursts: int = 3,
    sizes: tuple[int, int] = (200, 500),
    first: tuple[float, float] = (15.0, 25.0),
    gaps: tuple[float, float] = (70.0, 90.0),
    spread: float = 2.0,
) -> list[float]:
    """Sorted arrival times of a short seeded bursty trace: idle, then ``bursts`` bursts of
    ``sizes`` tasks each arriving within ``spread`` s, ``gaps`` s apart (long enough for
    a pool to scale back down in between)."""
    rng = random.Random(f"replay/{seed}")
    out: list[float] = []
    at = rng.uniform(*first)
    for _ in range(bursts):
        out += [at + rng.uniform(0.0, spread) for _ in range(rng.randint(*sizes))]
        at += rng.uniform(*gaps)
    return sorted(out)


def task_durations(count: int, mean: float, seed: int = 1) -> list[float]:
    """``count`` seeded exponential task durations (seconds) of mean ``mean``."""
    rng = random.Random(f"durations/{seed}")
    return [rng.expovariate(1.0 / mean) for _ in range(count)]


def level_at(curve: Curve, t: float) -> int:
    """The curve's value at ``t`` (0 before its first point)."""
    level = 0
    for when, value in curve:
        if when > t:
            break
        level = value
    return level


def steps(samples: Sequence[tuple[float, int]]) -> list[tuple[float, int]]:
    """Samples reduced to the points where the value changes (the first one kept)."""
    out: list[tuple[float, int]] = []
    for t, value in samples:
        if not out or out[-1][1] != value:
            out.append((t, value))
    return out


def integral(curve: Curve, end: float, start: float = 0.0) -> float:
    """Replica-seconds under the curve between ``start`` and ``end``."""
    total = 0.0
    points = [(start, level_at(curve, start))]
    points += [(t, v) for t, v in curve if start < t < end]
    for (t, value), (t_next, _) in zip(points, [*points[1:], (end, 0)], strict=True):
        total += value * (t_next - t)
    return total


def bursts(arrivals: Sequence[float], gap: float = BURST_GAP) -> list[tuple[float, float]]:
    """(first arrival, last arrival) of each group of arrivals separated by ``gap`` s."""
    out: list[tuple[float, float]] = []
    for t in sorted(arrivals):
        if out and t - out[-1][1] <= gap:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


@dataclass(frozen=True)
class BurstMarks:
    """How a curve answered one burst; times in seconds (None: not within the window)."""

    first_scale_up_s: float | None  # from the burst's first arrival
    peak_replicas: int
    to_one_s: float | None  # from the burst's last arrival
    to_zero_s: float | None  # from the burst's last arrival


def burst_marks(curve: Curve, burst: tuple[float, float], window_end: float) -> BurstMarks:
    """The curve's reaction to ``burst`` up to ``window_end`` (the next burst or the end)."""
    start, last = burst
    base = level_at(curve, start)
    inside = [(t, v) for t, v in curve if start < t < window_end]
    rise = next((t for t, v in inside if v > base), None)
    peak = max([base, *(v for _, v in inside)])
    peak_at = next((t for t, v in [(start, base), *inside] if v == peak), start)
    # Back down counts from the last arrival, and not before the peak.
    ref = max(peak_at, last)
    after = [(ref, level_at(curve, ref)), *((t, v) for t, v in inside if t > ref)]

    def reached(limit: int) -> float | None:
        when = next((t for t, v in after if v <= limit), None)
        return None if when is None else max(0.0, when - last)

    return BurstMarks(
        first_scale_up_s=None if rise is None else rise - start,
        peak_replicas=peak,
        to_one_s=reached(1),
        to_zero_s=reached(0),
    )


@dataclass(frozen=True)
class Deviation:
    """How far one curve is from another over the same span."""

    mean_abs_diff: float  # replicas, on a grid of ``step`` s
    max_abs_diff: int
    replica_s_ratio: float  # first curve's replica-seconds / second's
    within_one_pct: float  # share of grid points where they differ by at most one replica


def deviation(real: Curve, sim: Curve, end: float, step: float = 1.0) -> Deviation:
    """Compare ``real`` with ``sim`` from 0 to ``end``."""
    count = max(1, math.floor(end / step))
    diffs = [abs(level_at(real, k * step) - level_at(sim, k * step)) for k in range(count)]
    sim_s = integral(sim, end)
    return Deviation(
        mean_abs_diff=sum(diffs) / len(diffs),
        max_abs_diff=max(diffs),
        replica_s_ratio=integral(real, end) / sim_s if sim_s else math.inf,
        within_one_pct=100.0 * sum(1 for d in diffs if d <= 1) / len(diffs),
    )


def rise_latencies(desired: Curve, reached: Curve, *, from_zero_only: bool = False) -> list[float]:
    """For each rise of ``desired``: seconds until ``reached`` is at least the new value
    (rises overtaken by a later change of ``desired`` before that are skipped)."""
    out: list[float] = []
    for i, (t, value) in enumerate(desired):
        before = desired[i - 1][1] if i else 0
        if value <= before or (from_zero_only and before != 0):
            continue
        until = desired[i + 1][0] if i + 1 < len(desired) else math.inf
        when = next((tr for tr, vr in reached if tr >= t and vr >= value), None)
        if when is None:
            # Already there (a sample taken before the change) or never reached.
            if level_at(reached, t) >= value:
                out.append(0.0)
            continue
        if when <= until:
            out.append(when - t)
    return out


def report_rows(
    curves: dict[str, Curve], arrivals: Sequence[float], end: float
) -> list[dict[str, Any]]:
    """One row per curve and burst, then one per curve for the whole run (replica-s)."""
    rows: list[dict[str, Any]] = []
    found = bursts(arrivals)
    for who, curve in curves.items():
        for k, burst in enumerate(found):
            window_end = found[k + 1][0] if k + 1 < len(found) else end
            marks = burst_marks(curve, burst, window_end)
            size = sum(1 for t in arrivals if burst[0] <= t <= burst[1])
            metrics: dict[str, float] = {"tasks": float(size)}
            if marks.first_scale_up_s is not None:
                metrics["first_scale_up_s"] = round(marks.first_scale_up_s, 2)
            metrics["peak_replicas"] = float(marks.peak_replicas)
            if marks.to_one_s is not None:
                metrics["to_one_s"] = round(marks.to_one_s, 1)
            if marks.to_zero_s is not None:
                metrics["to_zero_s"] = round(marks.to_zero_s, 1)
            rows.append(
                {"contender": who, "case": f"burst {k + 1} at {burst[0]:.0f}s", "metrics": metrics}
            )
        rows.append(
            {
                "contender": who,
                "case": f"whole run ({end:.0f}s)",
                "metrics": {"replica_s": round(integral(curve, end), 1)},
            }
        )
    return rows


def shift(curve: Curve, by: float) -> list[tuple[float, int]]:
    """The curve moved ``by`` seconds later (earlier when negative)."""
    return [(t + by, v) for t, v in curve]


def capacity_latencies(desired: Curve, in_flight: Curve, slots: int) -> list[tuple[int, float]]:
    """For each rise of ``desired`` from ``before`` to ``after`` replicas: (pods added,
    seconds until more than ``before * slots`` tasks run, i.e. a new pod is working).
    Rises overtaken by another change of ``desired`` first are skipped."""
    out: list[tuple[int, float]] = []
    for i, (t, after) in enumerate(desired):
        before = desired[i - 1][1] if i else 0
        if after <= before:
            continue
        until = desired[i + 1][0] if i + 1 < len(desired) else math.inf
        when = next((tr for tr, vr in in_flight if tr >= t and vr > before * slots), None)
        if when is not None and when <= until:
            out.append((after - before, when - t))
    return out


def latency_line(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """(a, b) of start latency ~ a + b * pods started together, by least squares; with
    fewer than two distinct pod counts, (median latency, 0). Neither is below zero."""
    if not points:
        return 0.0, 0.0
    counts = [float(n) for n, _ in points]
    seconds = [s for _, s in points]
    if len(set(counts)) < 2:
        return max(0.0, statistics.median(seconds)), 0.0
    fit = statistics.linear_regression(counts, seconds)
    if fit.slope < 0:
        return max(0.0, statistics.median(seconds)), 0.0
    return max(0.0, fit.intercept), fit.slope
