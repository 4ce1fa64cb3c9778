"""``python -m bench.eventscost``: what task events cost a worker, off against on.

Runs one workload again and again on one nats-server, alternating workers without
and with ``--events`` (through ``CELERIAC_EVENTS``), so a slow moment of a shared
machine hits both sides alike. Each round queues the tasks first, starts the
workers, and times the tasks between 10% and 90% done. Prints every round, the
median throughput of each side, the median on/off ratio of back-to-back pairs (the
target: at least 0.80) and the CPU per task of the workers and of nats-server, the
steadier figures on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.celeriacnats import CeleriacNats
from bench.contending import TaskKind, WorkerProfile
from bench.servers import running_nats
from bench.workercost import cpu_seconds

EVENTS_ENV = "CELERIAC_EVENTS"


@dataclass(frozen=True)
class Round:
    """One measured run of the workload."""

    events: bool
    tasks_per_second: float
    cpu_ms_per_task: float
    server_cpu_ms_per_task: float

    def describe(self) -> str:
        """``events on : 1,234 tasks/s, 0.512 ms CPU/task``."""
        side = "on " if self.events else "off"
        return (
            f"events {side}: {self.tasks_per_second:8,.0f} tasks/s, "
            f"CPU per task: worker {self.cpu_ms_per_task:.3f} ms, "
            f"nats-server {self.server_cpu_ms_per_task:.3f} ms"
        )


def main(argv: list[str] | None = None) -> int:
    """Measure events off and on, alternated, and print the ratio."""
    parser = argparse.ArgumentParser(prog="python -m bench.eventscost", description=__doc__)
    parser.add_argument("-n", "--tasks", type=int, default=10000, help="tasks per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each side")
    parser.add_argument("--task", default="anoop", help="anoop, anoop_quiet, noop, ...")
    parser.add_argument("--pool", default="asyncio")
    parser.add_argument("-c", "--concurrency", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    profile = WorkerProfile(args.pool, args.workers, args.concurrency)
    rounds: list[Round] = []
    with (
        tempfile.TemporaryDirectory(prefix="celeriac-eventscost-") as scratch,
        running_nats(Path(scratch)) as server,
    ):
        celeriac = CeleriacNats(server.url, Path(scratch))
        assert server.process is not None
        server_pid = server.process.pid
        try:
            for index in range(2 * args.rounds):
                # off, on, on, off, off, on...: each side goes first as often as the other.
                events = index % 4 in (1, 2)
                kind = TaskKind(args.task)
                done = _round(celeriac, server_pid, profile, kind, args.tasks, events=events)
                rounds.append(done)
                print(f"round {index + 1}: {done.describe()}", flush=True)
        finally:
            celeriac.close()
    print(summary(rounds, f"{args.task} {profile.describe()}, {args.tasks} tasks"))
    return 0


def summary(rounds: list[Round], label: str) -> str:
    """Medians of each side and of the on/off ratio of each back-to-back pair of rounds
    (the pair ratio shrugs off a slow minute of a shared machine better)."""
    off = [r for r in rounds if not r.events]
    on = [r for r in rounds if r.events]
    pairs = [
        (a, b) if b.events else (b, a) for a, b in zip(rounds[::2], rounds[1::2], strict=False)
    ]
    ratio = statistics.median(b.tasks_per_second / a.tasks_per_second for a, b in pairs)
    cpu_off = statistics.median(r.cpu_ms_per_task for r in off)
    cpu_on = statistics.median(r.cpu_ms_per_task for r in on)
    return (
        f"{label}, {len(pairs)} pairs: median "
        f"{statistics.median(r.tasks_per_second for r in off):,.0f} tasks/s off, "
        f"{statistics.median(r.tasks_per_second for r in on):,.0f} tasks/s on; "
        f"on/off per pair {ratio:.2f}; worker CPU per task {cpu_off:.3f} ms off, "
        f"{cpu_on:.3f} ms on (off/on {cpu_off / cpu_on:.2f})"
    )


def _round(
    celeriac: CeleriacNats,
    server_pid: int,
    profile: WorkerProfile,
    kind: TaskKind,
    total: int,
    *,
    events: bool,
) -> Round:
    celeriac.purge()
    celeriac.prefill(kind, total)
    with _events(events), celeriac.workers(profile) as procs:
        return _measure(celeriac, [p.pid for p in procs], server_pid, total, events=events)


@contextmanager
def _events(on: bool) -> Iterator[None]:
    """Workers started inside the block publish events when ``on`` (they copy the env)."""
    before = os.environ.get(EVENTS_ENV)
    os.environ[EVENTS_ENV] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(EVENTS_ENV, None)
        else:
            os.environ[EVENTS_ENV] = before


def _measure(
    celeriac: CeleriacNats, pids: list[int], server_pid: int, total: int, *, events: bool
) -> Round:
    # fraction done -> (time, workers' CPU seconds, the server's CPU seconds)
    marks: dict[float, tuple[float, float, float]] = {}
    deadline = time.monotonic() + 600
    while len(marks) < 2:
        done = total - celeriac.backlog().unfinished
        for fraction in (0.1, 0.9):
            if fraction not in marks and done >= fraction * total:
                workers = sum(cpu_seconds(pid) for pid in pids)
                marks[fraction] = (time.monotonic(), workers, cpu_seconds(server_pid))
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done} of {total} tasks done after 600 s")
        time.sleep(0.01)
    (t10, cpu10, server10), (t90, cpu90, server90) = marks[0.1], marks[0.9]
    if t90 <= t10:
        raise ValueError(f"{total} tasks drained too fast to measure; ask for more (-n)")
    counted = 0.8 * total
    return Round(
        events,
        counted / (t90 - t10),
        (cpu90 - cpu10) / counted * 1e3,
        (server90 - server10) / counted * 1e3,
    )


if __name__ == "__main__":
    raise SystemExit(main())
