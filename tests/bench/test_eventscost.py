"""``python -m bench.eventscost``: events off against on, in alternated rounds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.eventscost import Round, summary

ROOT = Path(__file__).resolve().parents[2]


def test_the_summary_pairs_back_to_back_rounds() -> None:
    rounds = [
        Round(events=on, tasks_per_second=rate, cpu_ms_per_task=cpu, server_cpu_ms_per_task=0.02)
        for on, rate, cpu in [(False, 1000, 0.1), (True, 900, 0.125), (True, 400, 0.125),
                              (False, 500, 0.1)]
    ]  # fmt: skip
    line = summary(rounds, "anoop")
    assert line.startswith("anoop, 2 pairs: median 750 tasks/s off, 650 tasks/s on; ")
    # Pair ratios 0.9 and 0.8: a slow second pair does not sink the figure.
    assert "on/off per pair 0.85" in line
    assert "0.100 ms off, 0.125 ms on (off/on 0.80)" in line


@pytest.mark.integration
def test_eventscost_alternates_and_reports_the_ratio() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.eventscost", "-n", "2000", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    first, second, last = proc.stdout.strip().splitlines()
    assert first.startswith("round 1: events off: ") and "tasks/s" in first
    assert second.startswith("round 2: events on : ") and "nats-server" in second
    assert last.startswith("anoop asyncio 1x100, 2000 tasks, 1 pairs: median ")
    ratio = float(last.split("on/off per pair ")[1].split(";")[0])
    assert ratio > 0
