"""``python -m bench.gatewaycost``: HTTP through the gateway against the SDK."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.gatewaycost import Round, percentile, summary

ROOT = Path(__file__).resolve().parents[2]


def test_percentiles_are_nearest_rank() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 0.5) == 50.0
    assert percentile(samples, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0


def test_the_summary_takes_each_sides_medians() -> None:
    rounds = [
        Round("sdk", 0.2, 0.8, 10000), Round("http", 1.0, 4.0, 1000),
        Round("http", 3.0, 6.0, 3000), Round("sdk", 0.4, 1.2, 20000),
    ]  # fmt: skip
    line = summary(rounds, "label")
    assert line.startswith("label: median over 2 rounds each: SDK p50 0.300 ms, p99 1.000 ms, ")
    assert "15,000 submits/s; HTTP p50 2.000 ms, p99 5.000 ms, 2,000 submits/s" in line
    assert line.endswith("(HTTP/SDK rate 0.13)")


@pytest.mark.integration
def test_gatewaycost_measures_both_sides() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gatewaycost", "-n", "300", "--latency-tasks", "50",
         "--rounds", "1", "-c", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    first, second, last = proc.stdout.strip().splitlines()
    assert first.startswith("round 1: sdk : p50 ") and "submits/s in flight" in first
    assert second.startswith("round 2: http: p50 ")
    assert last.startswith("50 one at a time, 300 with 4 in flight: median over 1 rounds each: ")
    assert float(last.split("HTTP/SDK rate ")[1].rstrip(")")) > 0
