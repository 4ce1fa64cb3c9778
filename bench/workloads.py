"""The workloads that need only the brokers: enqueue, processing, latency, I/O and CPU.

Each function runs one workload against every contender it names and returns
rows of ``{"contender", "case", "metrics"}``; the same code measures every system.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.contending import Contender, LatencySample, TaskKind, WorkerProfile
from bench.measuring import pace, percentile, watch_drain
from bench.workerprocs import check_alive

Row = dict[str, Any]
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class Sizes:
    """Task counts of one run (full or ``--quick``)."""

    enqueue: int
    process: int
    latency: int
    latency_rate: float
    io: int
    io_sleep: float
    cpu: int
    cpu_loops: int
    quick_run: bool = False

    @classmethod
    def full(cls, cpu_loops: int) -> Sizes:
        """The sizes the issue asks for."""
        return cls(20_000, 20_000, 500, 50.0, 2_000, 0.1, 1_000, cpu_loops)

    @classmethod
    def quick(cls, cpu_loops: int) -> Sizes:
        """Small counts for a smoke run."""
        return cls(500, 500, 20, 50.0, 100, 0.1, 20, cpu_loops, quick_run=True)


def say(message: str) -> None:
    """Progress output (stderr, so the JSON on disk is the only result)."""
    print(message, file=sys.stderr, flush=True)


def row(contender: str, case: str, **metrics: float) -> Row:
    """One result row; prints it as progress."""
    shown = ", ".join(f"{k}={v:,.4g}" for k, v in metrics.items())
    say(f"    {contender:<13} {case:<22} {shown}")
    return {"contender": contender, "case": case, "metrics": metrics}


def enqueue(contenders: Mapping[str, Contender], sizes: Sizes) -> list[Row]:
    """Single producer, no workers: one-by-one sync submits, then one batch."""
    rows = []
    for name in ("raw-nats", "celeriac", "celery-redis"):
        contender = contenders.get(name)
        if contender is None:
            continue
        for batch in (False, True):
            contender.purge()
            seconds = contender.enqueue(sizes.enqueue, batch=batch)
            case = "batch" if batch else "sync one-by-one"
            rows.append(row(name, case, tasks_per_s=sizes.enqueue / seconds, seconds=seconds))
        contender.purge()
    return rows


def drain(contender: Contender, profile: WorkerProfile, kind: TaskKind, count: int) -> Row:
    """Prefill ``count`` tasks, start the workers, and time the queue draining."""
    contender.purge()
    contender.prefill(kind, count)
    with contender.workers(profile) as procs:

        def poll() -> Any:
            check_alive(procs)
            return contender.backlog()

        result = watch_drain(poll, count, timeout=max(120.0, count / 20))
    contender.purge()
    return row(
        contender.name,
        f"{kind.name} {profile.describe()}",
        tasks_per_s=result.steady_rate,
        overall_tasks_per_s=result.overall_rate,
        seconds=result.seconds,
    )


@dataclass(frozen=True)
class Case:
    """One contender's worker set-up in a workload; ``quick`` cases also run in --quick."""

    contender: str
    pool: str
    instances: int
    concurrency: int
    task: str = "stamp"
    quick: bool = False

    @property
    def profile(self) -> WorkerProfile:
        """The worker profile of this case."""
        return WorkerProfile(self.pool, self.instances, self.concurrency)


PROCESS_CASES = [
    Case("raw-nats", "fetch", 2, 1, "noop", quick=True),
    Case("celeriac", "asyncio", 2, 100, "anoop", quick=True),
    Case("celeriac", "threads", 2, 10, "noop"),
    Case("celeriac", "asyncio", 2, 100, "anoop_quiet"),
    Case("celery-redis", "prefork", 1, 2, "noop", quick=True),
    Case("celery-redis", "threads", 2, 10, "noop"),
]
IO_CASES = [
    Case("celeriac", "asyncio", 2, 50, "asleep"),
    Case("celeriac", "threads", 2, 50, "sleep", quick=True),
    Case("celery-redis", "threads", 2, 50, "sleep", quick=True),
    Case("celery-redis", "prefork", 1, 2, "sleep"),
]
CPU_CASES = [
    Case("celeriac", "processes", 1, 2, "burn", quick=True),
    Case("celery-redis", "prefork", 1, 2, "burn", quick=True),
]
LATENCY_CASES = [
    Case("raw-nats", "fetch", 2, 1, quick=True),
    Case("celeriac", "asyncio", 2, 100, quick=True),
    Case("celeriac", "threads", 2, 10),
    Case("celery-redis", "prefork", 1, 2, quick=True),
]


def selected(
    contenders: Mapping[str, Contender], cases: Sequence[Case], sizes: Sizes
) -> list[tuple[Contender, Case]]:
    """The cases to run: contenders present, and only quick cases in a quick run."""
    return [
        (contenders[c.contender], c)
        for c in cases
        if c.contender in contenders and (c.quick or not sizes.quick_run)
    ]


def run_cases(
    contenders: Mapping[str, Contender],
    cases: Sequence[Case],
    args: tuple[Any, ...],
    sizes: Sizes,
    count: int,
) -> list[Row]:
    """Drain ``count`` tasks per case (prefork sleeps get a tenth: 2 processes, 100 ms each)."""
    rows = []
    for contender, case in selected(contenders, cases, sizes):
        n = count // 10 if (case.pool == "prefork" and case.task == "sleep") else count
        rows.append(drain(contender, case.profile, TaskKind(case.task, args), n))
    return rows


def process(contenders: Mapping[str, Contender], sizes: Sizes) -> list[Row]:
    """Drain no-op tasks with two worker processes per contender."""
    return run_cases(contenders, PROCESS_CASES, (), sizes, sizes.process)


def io_bound(contenders: Mapping[str, Contender], sizes: Sizes) -> list[Row]:
    """Drain tasks that sleep (I/O stand-in): how well concurrency is used."""
    return run_cases(contenders, IO_CASES, (sizes.io_sleep,), sizes, sizes.io)


def cpu_bound(contenders: Mapping[str, Contender], sizes: Sizes) -> list[Row]:
    """Drain ~10 ms pure-Python tasks on two worker processes."""
    return run_cases(contenders, CPU_CASES, (sizes.cpu_loops,), sizes, sizes.cpu)


def _sampler(contender: Contender, samples: list[LatencySample]) -> Callable[[], None]:
    def step() -> None:
        samples.append(contender.probe())

    return step


def latency(contenders: Mapping[str, Contender], sizes: Sizes) -> list[Row]:
    """Submit stamp tasks at a steady rate to idle workers; percentiles of both delays."""
    rows = []
    for contender, case in selected(contenders, LATENCY_CASES, sizes):
        profile = case.profile
        contender.purge()
        samples: list[LatencySample] = []
        with contender.workers(profile) as procs:
            contender.wait_ready(profile, READY_TIMEOUT)
            for _ in range(5):  # warm connections and code paths
                contender.probe()
            pace(sizes.latency, sizes.latency_rate, _sampler(contender, samples))
            check_alive(procs)
        contender.purge()
        start = [s.to_start * 1000 for s in samples]
        result = [s.to_result * 1000 for s in samples]
        rows.append(
            row(
                contender.name,
                f"{profile.describe()} @{sizes.latency_rate:g}/s",
                start_p50_ms=percentile(start, 0.5),
                start_p99_ms=percentile(start, 0.99),
                result_p50_ms=percentile(result, 0.5),
                result_p99_ms=percentile(result, 0.99),
            )
        )
    return rows
