"""The task bodies every contender runs, so each does exactly the same work."""

from __future__ import annotations

import time


def burn(loops: int) -> int:
    """Pure-Python CPU work: ``loops`` multiply-adds (calibrated to about 10 ms)."""
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


def calibrate_burn(target_seconds: float = 0.010) -> int:
    """How many ``burn`` loops take about ``target_seconds`` on this machine."""
    loops = 10_000
    while True:
        started = time.perf_counter()
        burn(loops)
        elapsed = time.perf_counter() - started
        if elapsed >= 0.02:
            return max(1, int(loops * target_seconds / elapsed))
        loops *= 2
