"""The benchmark's arithmetic and reports, on made-up rows (no servers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import rendering, reporting
from bench.contending import Backlog
from bench.measuring import percentile, watch_drain


def r(contender: str, case: str, **metrics: float) -> dict[str, Any]:
    return {"contender": contender, "case": case, "metrics": metrics}


WORKLOADS = {
    "enqueue": [
        r("raw-nats", "batch", tasks_per_s=10_000.0),
        r("celeriac", "batch", tasks_per_s=6_000.0),
        r("celery-redis", "batch", tasks_per_s=1_000.0),
    ],
    "process": [
        r("raw-nats", "noop fetch 2x1", tasks_per_s=20_000.0),
        r("celeriac", "anoop asyncio 2x100", tasks_per_s=8_000.0),
        r("celeriac", "anoop_quiet asyncio 2x100", tasks_per_s=16_000.0),
        r("celery-redis", "noop prefork 1x2", tasks_per_s=1_000.0),
        r("celery-redis", "noop threads 2x10", tasks_per_s=2_000.0),
    ],
    "latency": [
        r("celeriac", "asyncio 2x100 @50/s", start_p50_ms=2.0, result_p50_ms=4.0),
        r("celery-redis", "prefork 1x2 @50/s", start_p50_ms=6.0, result_p50_ms=8.0),
    ],
    "autoscale": [
        r("celeriac", "from zero", backlog_to_replicas_s=1.5),
        r("keda-defaults", "computed", backlog_to_replicas_s=45.0),
    ],
}


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 0.5, 5.0),
        ([1.0, 2.0, 3.0], 0.5, 2.0),
        ([3.0, 1.0, 2.0, 4.0], 0.5, 2.5),
        (list(range(101)), 0.99, 99.0),
        ([1.0, 2.0], 1.0, 2.0),
    ],
)
def test_percentile(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)


def test_watch_drain_follows_the_backlog_to_zero() -> None:
    samples = iter([Backlog(100, 100), Backlog(80, 95), Backlog(10, 50), Backlog(0, 5)])
    drain = watch_drain(lambda: next(samples, Backlog(0, 0)), 100, timeout=5, interval=0.001)
    assert drain.total == 100
    assert drain.seconds > 0
    assert drain.steady_rate > 0


def test_watch_drain_times_out_naming_the_backlog() -> None:
    with pytest.raises(TimeoutError, match="undelivered=7"):
        watch_drain(lambda: Backlog(7, 7), 10, timeout=0.05, interval=0.001)


def test_ratios_use_the_best_case_of_each_side() -> None:
    ratios = {x["ratio"]: x["value"] for x in reporting.ratios(WORKLOADS)}
    assert ratios["processing: Celeriac / Celery+Redis (best pool each)"] == 4.0
    assert ratios["processing: Celeriac / raw nats-py ceiling"] == 0.4
    # Storing no results is its own comparison, never the "best case" of the others.
    assert ratios["processing, results off: Celeriac ignore_result / raw nats-py"] == 0.8
    assert ratios["enqueue batch: Celeriac / raw async publish"] == 0.6
    assert ratios["latency p50 submit->start: Celery+Redis / Celeriac (x lower)"] == 3.0
    assert ratios["autoscale: KEDA defaults (computed) / Celeriac (x faster)"] == 30.0
    # Nothing measured for I/O: no I/O ratio rather than a made-up one.
    assert not [k for k in ratios if k.startswith("I/O")]


@pytest.mark.parametrize(
    ("target", "verdict"),
    [
        ("processing >= 5x Celery+Redis", "missed"),
        ("processing >= 50% of raw nats-py (results stored, unlike raw)", "missed"),
        ("processing >= 50% of raw nats-py (results off, like raw)", "met"),
        ("batch enqueue >= 50% of raw async publish", "met"),
        ("p50 submit->start < 3 ms (ms)", "met"),
        ("autoscaler reaction < 3 s (s)", "met"),
        ("500+500 Ready <= 60 s, operator RSS < 300 MiB (s)", "not measured"),
    ],
)
def test_target_verdicts(target: str, verdict: str) -> None:
    verdicts = {t["target"]: t["verdict"] for t in reporting.targets(WORKLOADS)}
    assert verdicts[target] == verdict


def test_operator_target_needs_both_time_and_memory() -> None:
    ok = {"operator": [r("celeriac", "500", all_ready_s=30.0, peak_rss_mib=120.0)]}
    fat = {"operator": [r("celeriac", "500", all_ready_s=30.0, peak_rss_mib=400.0)]}
    label = "500+500 Ready <= 60 s, operator RSS < 300 MiB (s)"
    assert {t["target"]: t["verdict"] for t in reporting.targets(ok)}[label] == "met"
    assert {t["target"]: t["verdict"] for t in reporting.targets(fat)}[label] == "missed"


def test_markdown_has_targets_ratios_and_one_table_per_workload() -> None:
    result = {
        "date": "2025-01-01",
        "command": "python -m bench",
        "quick": False,
        "machine": {
            "nproc": 2,
            "memory_gib": 24.0,
            "cpu_model": "CPU",
            "python": "3.11",
            "versions": {"celery": "5"},
        },
        "workloads": WORKLOADS,
        "ratios": reporting.ratios(WORKLOADS),
        "targets": reporting.targets(WORKLOADS),
    }
    text = rendering.markdown(result)
    assert "| processing >= 5x Celery+Redis | 4 | missed |" in text
    for title in ("Enqueue throughput", "Processing throughput", "Latency", "Autoscaling"):
        assert f"## {title}" in text


def test_chart_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib comes with bench/setup.sh")
    path = tmp_path / "chart.png"
    assert rendering.chart(WORKLOADS, path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert not rendering.chart({"autoscale": WORKLOADS["autoscale"]}, tmp_path / "none.png")
