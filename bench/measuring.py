"""Turning observations into numbers: drain rates from backlog samples, percentiles."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.contending import Backlog

# Backlog sampling period while a queue drains.
POLL_INTERVAL = 0.01


@dataclass(frozen=True)
class Drain:
    """How a backlog of ``total`` tasks drained."""

    total: int
    # Seconds from the first delivery to the last task finished.
    seconds: float
    # Tasks/s between 10% and 90% done: worker start-up and the tail left out.
    steady_rate: float

    @property
    def overall_rate(self) -> float:
        """Tasks/s over the whole drain."""
        return self.total / self.seconds if self.seconds > 0 else math.inf


def watch_drain(
    poll: Callable[[], Backlog], total: int, *, timeout: float, interval: float = POLL_INTERVAL
) -> Drain:
    """Sample the backlog until it is empty; raise TimeoutError with the last sample."""
    started = time.monotonic()
    first = t90 = t10 = None
    while True:
        now = time.monotonic()
        backlog = poll()
        if first is None and backlog.undelivered < total:
            first = now
        done = total - backlog.unfinished
        if t90 is None and done >= 0.1 * total:
            t90 = now
        if t10 is None and done >= 0.9 * total:
            t10 = now
        if backlog.unfinished <= 0:
            break
        if now - started > timeout:
            raise TimeoutError(f"queue not drained after {timeout:.0f}s: {backlog}")
        time.sleep(interval)
    first = first if first is not None else now
    t90 = t90 if t90 is not None else first
    t10 = t10 if t10 is not None else now
    window = t10 - t90
    steady = 0.8 * total / window if window > 0 else total / max(now - first, interval)
    return Drain(total=total, seconds=max(now - first, interval), steady_rate=steady)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def pace(count: int, rate: float, step: Callable[[], None]) -> None:
    """Call ``step`` ``count`` times at ``rate`` per second (no catch-up bursts)."""
    interval = 1.0 / rate
    next_at = time.monotonic()
    for _ in range(count):
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        step()
        next_at = max(next_at + interval, time.monotonic())
