"""``python -m bench --quick``: every broker workload against real servers, output shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.servers import SetupError, missing_prerequisites, run_setup

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

BROKER_WORKLOADS = ["enqueue", "process", "latency", "io", "cpu"]
VERDICTS = {"met", "missed", "not measured"}


def prerequisites() -> None:
    """Install Celery and redis-server as bench/setup.sh does; skip only if impossible."""
    if not missing_prerequisites():
        return
    try:
        run_setup()
    except SetupError as exc:
        pytest.skip(f"Celery + Redis contender unavailable: {exc}")


def check_rows(rows: list[dict[str, Any]]) -> None:
    assert rows
    for r in rows:
        assert set(r) == {"contender", "case", "metrics"}
        assert r["contender"] in {"raw-nats", "celeriac", "celery-redis"}
        assert r["metrics"]
        for value in r["metrics"].values():
            assert isinstance(value, float | int)
            assert value > 0


def test_quick_run_writes_results(tmp_path: Path) -> None:
    prerequisites()
    argv = [sys.executable, "-m", "bench", "--quick", "--no-setup", "--out", str(tmp_path)]
    for workload in BROKER_WORKLOADS:
        argv += ["-w", workload]
    proc = subprocess.run(argv, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    [json_path] = list(tmp_path.glob("*-quick.json"))
    result = json.loads(json_path.read_text())
    assert result["quick"] is True
    assert result["command"].startswith("python -m bench --quick")
    assert result["machine"]["nproc"] >= 1
    assert set(result["workloads"]) == set(BROKER_WORKLOADS)
    for rows in result["workloads"].values():
        check_rows(rows)
    contenders = {r["contender"] for rows in result["workloads"].values() for r in rows}
    assert contenders == {"raw-nats", "celeriac", "celery-redis"}
    latency = result["workloads"]["latency"]
    assert {"start_p50_ms", "start_p99_ms", "result_p50_ms", "result_p99_ms"} <= set(
        latency[0]["metrics"]
    )
    ratios = {r["ratio"]: r["value"] for r in result["ratios"]}
    assert "processing: Celeriac / raw nats-py ceiling" in ratios
    assert all(v > 0 for v in ratios.values())
    verdicts = {t["target"]: t["verdict"] for t in result["targets"]}
    assert set(verdicts.values()) <= VERDICTS
    assert verdicts["autoscaler reaction < 3 s (s)"] == "not measured"
    assert verdicts["processing >= 5x Celery+Redis"] in {"met", "missed"}
    assert json_path.with_suffix(".md").read_text().startswith("# Benchmark run")
    assert json_path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "== process" in proc.stderr  # progress output


def test_workercost_reports_rate_and_cpu_per_task() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.workercost", "-n", "2000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith("anoop asyncio 1x100: ")
    rate, cpu = line.split(": ", 1)[1].split(", ")
    assert float(rate.split()[0].replace(",", "")) > 0
    assert float(cpu.split()[0]) > 0
