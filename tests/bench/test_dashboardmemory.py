"""``python -m bench.dashboardmemory``: finding the page's endpoints, the report, a small run.

Only the output's shape is checked; how much memory the dashboard uses is the
benchmark's to report, not a test's to assert.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.dashboardmemory import Sample, api_paths, report, rss_kib, script_sources

ROOT = Path(__file__).resolve().parents[2]

# text of a page or script -> the fixed /api/ paths in it
PATHS: list[tuple[str, list[str]]] = [
    ('part("queues", "/api/queues", render)', ["/api/queues"]),
    ("call('/api/workers')", ["/api/workers"]),
    ("fetch(`/api/pools`)", ["/api/pools"]),
    ('"/api/tasks?" + query', ["/api/tasks"]),
    ('"/api/tasks/" + encodeURIComponent(id)', []),  # built at run time
    ("`/api/tasks/${id}/revoke`", []),
    ('"/api/dead-letters/replay"', ["/api/dead-letters/replay"]),
    ('"/api/" + name', []),
    ('"/static/app.js" "/apis/x"', []),
    ('"/api/queues" "/api/queues" "/api/config"', ["/api/config", "/api/queues"]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), PATHS)
def test_api_paths_are_the_literal_ones(text: str, expected: list[str]) -> None:
    assert api_paths([text]) == expected


def test_script_sources() -> None:
    page = '<script src="/static/app.js" defer></script><script>inline()</script>'
    assert script_sources(page) == ["/static/app.js"]
    assert script_sources("<SCRIPT type='module' src='a.js'></SCRIPT>") == ["a.js"]


def test_report_reads_the_first_sample_past_each_mark() -> None:
    samples = [
        Sample(0, 0, 60 * 1024),
        Sample(1, 900, 61 * 1024),
        Sample(2, 1_050, 62 * 1024),
        Sample(3, 5_000, 62 * 1024),
        Sample(4, 9_000, 64 * 1024),
        Sample(5, 10_000, 63 * 1024),
    ]
    lines = report(samples, 10_000)
    assert lines == [
        "dashboard RSS before any task: 60.0 MiB",
        "dashboard RSS at   1,050 tasks: 62.0 MiB",
        "dashboard RSS at   5,000 tasks: 62.0 MiB",
        "dashboard RSS at  10,000 tasks: 63.0 MiB",
        "growth 1,050 -> 10,000 tasks: +1.0 MiB (+117.2 bytes per task); peak 64.0 MiB; 5 s",
    ]


def test_rss_of_this_process() -> None:
    assert rss_kib(os.getpid()) > 1024


@pytest.mark.integration
def test_small_run_prints_rss_at_each_mark() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.dashboardmemory", "-n", "1000", "--every", "0.5",
         "--settle", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert re.fullmatch(r"dashboard RSS before any task: \d+\.\d MiB", lines[0])
    mark = re.compile(r"dashboard RSS at +([\d,]+) tasks: \d+\.\d MiB")
    done = [int(m.group(1).replace(",", "")) for line in lines[1:4] if (m := mark.fullmatch(line))]
    assert len(done) == 3 and done[0] >= 100 and done[1] >= 500 and done[2] == 1000
    assert lines[4].startswith("growth ")
    assert re.search(r"^[\d,]+ API requests to \d+ endpoints", proc.stdout, re.MULTILINE)
    polled = re.search(r"^polling (.*)$", proc.stderr, re.MULTILINE)
    assert polled and {"/api/queues", "/api/workers", "/api/tasks"} <= set(
        polled.group(1).split(", ")
    )
