"""Turn a run's rows into ratios, target verdicts, a markdown report and a PNG chart."""

from __future__ import annotations

import math
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

Row = dict[str, Any]
Workloads = Mapping[str, Sequence[Row]]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _command_version(argv: Sequence[str]) -> str:
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        return "not installed"
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=10)
    return (proc.stdout or proc.stderr).strip().splitlines()[0] if proc.returncode == 0 else "?"


def machine_info(nats_server: str | None = None) -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "nproc": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {
            "celeriac": _version("celeriac"),
            "nats-py": _version("nats-py"),
            "celery": _version("celery"),
            "kombu": _version("kombu"),
            "redis-py": _version("redis"),
            "redis-server": _command_version(["redis-server", "--version"]),
            "nats-server": _command_version([nats_server, "--version"]) if nats_server else "?",
        },
    }


def metric(rows: Sequence[Row], contender: str, name: str, case: str = "") -> float | None:
    """Best (largest) value of ``name`` among ``contender``'s rows whose case starts with
    ``case``; for latencies use :func:`lowest`."""
    values = _values(rows, contender, name, case)
    return max(values) if values else None


def lowest(rows: Sequence[Row], contender: str, name: str, case: str = "") -> float | None:
    """Smallest value of ``name`` among matching rows."""
    values = _values(rows, contender, name, case)
    return min(values) if values else None


# Cases that store no results are compared only when asked for by name, so that "best
# case" comparisons weigh like with like (the other contenders store every result).
NO_RESULTS = "quiet"


def _values(rows: Sequence[Row], contender: str, name: str, case: str) -> list[float]:
    return [
        float(r["metrics"][name])
        for r in rows
        if r["contender"] == contender
        and r["case"].startswith(case)
        and name in r["metrics"]
        and (NO_RESULTS in case or NO_RESULTS not in r["case"])
    ]


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isinf(a) or math.isinf(b):
        return None
    return a / b


# (label, workload, numerator spec, denominator spec); a spec is (contender, case, metric).
Spec = tuple[str, str, str]
RATIOS: list[tuple[str, str, Spec, Spec]] = [
    ("processing: Celeriac / Celery+Redis (best pool each)", "process",
     ("celeriac", "", "tasks_per_s"), ("celery-redis", "", "tasks_per_s")),
    ("processing: Celeriac threads / Celery+Redis threads", "process",
     ("celeriac", "noop threads", "tasks_per_s"), ("celery-redis", "noop threads", "tasks_per_s")),
    ("processing: Celeriac / raw nats-py ceiling", "process",
     ("celeriac", "", "tasks_per_s"), ("raw-nats", "", "tasks_per_s")),
    ("processing, results off: Celeriac ignore_result / raw nats-py", "process",
     ("celeriac", "anoop_quiet", "tasks_per_s"), ("raw-nats", "", "tasks_per_s")),
    ("enqueue batch: Celeriac / raw async publish", "enqueue",
     ("celeriac", "batch", "tasks_per_s"), ("raw-nats", "batch", "tasks_per_s")),
    ("enqueue one-by-one: Celeriac / raw sync publish", "enqueue",
     ("celeriac", "sync", "tasks_per_s"), ("raw-nats", "sync", "tasks_per_s")),
    ("enqueue batch: Celeriac / Celery+Redis group", "enqueue",
     ("celeriac", "batch", "tasks_per_s"), ("celery-redis", "batch", "tasks_per_s")),
    ("enqueue one-by-one: Celeriac / Celery+Redis", "enqueue",
     ("celeriac", "sync", "tasks_per_s"), ("celery-redis", "sync", "tasks_per_s")),
    ("I/O-bound: Celeriac asyncio / Celery+Redis threads", "io",
     ("celeriac", "asleep asyncio", "tasks_per_s"),
     ("celery-redis", "sleep threads", "tasks_per_s")),
    ("I/O-bound: Celeriac threads / Celery+Redis threads", "io",
     ("celeriac", "sleep threads", "tasks_per_s"),
     ("celery-redis", "sleep threads", "tasks_per_s")),
    ("CPU-bound: Celeriac processes / Celery+Redis prefork", "cpu",
     ("celeriac", "", "tasks_per_s"), ("celery-redis", "", "tasks_per_s")),
    ("autoscale: KEDA defaults (computed) / Celeriac (x faster)", "autoscale",
     ("keda-defaults", "", "backlog_to_replicas_s"), ("celeriac", "", "backlog_to_replicas_s")),
]  # fmt: skip
LATENCY_RATIOS: list[tuple[str, str]] = [
    ("latency p50 submit->start: Celery+Redis / Celeriac (x lower)", "start_p50_ms"),
    ("latency p50 submit->result: Celery+Redis / Celeriac (x lower)", "result_p50_ms"),
]


def ratios(workloads: Workloads) -> list[dict[str, Any]]:
    """Every ratio whose both sides were measured in this run."""
    out = []
    for label, workload, (c1, k1, m1), (c2, k2, m2) in RATIOS:
        rows = workloads.get(workload, [])
        value = _ratio(metric(rows, c1, m1, k1), metric(rows, c2, m2, k2))
        if value is not None:
            out.append({"ratio": label, "value": round(value, 3)})
    rows = workloads.get("latency", [])
    for label, name in LATENCY_RATIOS:
        value = _ratio(lowest(rows, "celery-redis", name), lowest(rows, "celeriac", name))
        if value is not None:
            out.append({"ratio": label, "value": round(value, 3)})
    return out


Check = Callable[[Workloads], tuple[float | None, bool | None]]


def _at_least(value: float | None, threshold: float) -> tuple[float | None, bool | None]:
    return value, (None if value is None else value >= threshold)


def _below(value: float | None, threshold: float) -> tuple[float | None, bool | None]:
    return value, (None if value is None else value < threshold)


def _proc(w: Workloads, a: str, b: str) -> float | None:
    rows = w.get("process", [])
    return _ratio(metric(rows, a, "tasks_per_s"), metric(rows, b, "tasks_per_s"))


def _kube(w: Workloads, workload: str, name: str) -> float | None:
    return metric(w.get(workload, []), "celeriac", name)


def _operator_ok(w: Workloads) -> tuple[float | None, bool | None]:
    ready, rss = _kube(w, "operator", "all_ready_s"), _kube(w, "operator", "peak_rss_mib")
    if ready is None or rss is None:
        return ready, None
    return ready, ready <= 60 and rss < 300


TARGETS: list[tuple[str, Check]] = [
    ("processing >= 5x Celery+Redis", lambda w: _at_least(_proc(w, "celeriac", "celery-redis"), 5)),
    ("processing >= 50% of raw nats-py (results stored, unlike raw)",
     lambda w: _at_least(_proc(w, "celeriac", "raw-nats"), 0.5)),
    ("processing >= 50% of raw nats-py (results off, like raw)", lambda w: _at_least(_ratio(
        metric(w.get("process", []), "celeriac", "tasks_per_s", "anoop_quiet"),
        metric(w.get("process", []), "raw-nats", "tasks_per_s")), 0.5)),
    ("batch enqueue >= 50% of raw async publish", lambda w: _at_least(_ratio(
        metric(w.get("enqueue", []), "celeriac", "tasks_per_s", "batch"),
        metric(w.get("enqueue", []), "raw-nats", "tasks_per_s", "batch")), 0.5)),
    ("p50 submit->start < 3 ms (ms)", lambda w: _below(
        lowest(w.get("latency", []), "celeriac", "start_p50_ms"), 3.0)),
    ("autoscaler reaction < 3 s (s)", lambda w: _below(
        _kube(w, "autoscale", "backlog_to_replicas_s"), 3.0)),
    ("500+500 Ready <= 60 s, operator RSS < 300 MiB (s)", _operator_ok),
]  # fmt: skip


def targets(workloads: Workloads) -> list[dict[str, Any]]:
    """Each target of the issue with the measured value and met / missed / not measured."""
    out = []
    for label, check in TARGETS:
        value, met = check(workloads)
        verdict = "not measured" if met is None else ("met" if met else "missed")
        shown = None if value is None else round(value, 3)
        out.append({"target": label, "value": shown, "verdict": verdict})
    return out
