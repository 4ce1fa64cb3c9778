"""``python -m bench.workercost``: what one task costs a Celeriac worker, in CPU time.

Throughput on a shared 2-core machine swings with whatever else runs; the CPU a
worker spends per task does not, so it is the figure to compare before and after
a change to the worker. The run queues the tasks first, starts the workers, and
reads their CPU time (user + system, from ``/proc``) when 10% and 90% of the
tasks are done. ``--profile FILE`` also records the first worker with py-spy
(collapsed stacks, for a flame graph or a quick ``sort | uniq``).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.celeriacnats import CeleriacNats
from bench.contending import TaskKind, WorkerProfile
from bench.servers import running_nats

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def main(argv: list[str] | None = None) -> int:
    """Run one measurement and print it."""
    parser = argparse.ArgumentParser(prog="python -m bench.workercost", description=__doc__)
    parser.add_argument("-n", "--tasks", type=int, default=20000)
    parser.add_argument("--task", default="anoop", help="anoop, anoop_quiet, noop, ...")
    parser.add_argument("--pool", default="asyncio")
    parser.add_argument("-c", "--concurrency", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="py-spy output (collapsed stacks)")
    args = parser.parse_args(argv)
    profile = WorkerProfile(args.pool, args.workers, args.concurrency)
    with (
        tempfile.TemporaryDirectory(prefix="celeriac-workercost-") as scratch,
        running_nats(Path(scratch)) as server,
    ):
        celeriac = CeleriacNats(server.url, Path(scratch))
        try:
            celeriac.prefill(TaskKind(args.task), args.tasks)
            with celeriac.workers(profile) as procs:
                spy = _py_spy(procs[0].pid, args.profile) if args.profile else None
                try:
                    line = _measure(celeriac, [p.pid for p in procs], args.tasks)
                finally:
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                        spy.wait(timeout=30)
        finally:
            celeriac.close()
    print(f"{args.task} {profile.describe()}: {line}")
    return 0


def _measure(celeriac: CeleriacNats, pids: list[int], total: int) -> str:
    marks: dict[float, tuple[float, float]] = {}  # fraction done -> (time, CPU seconds)
    deadline = time.monotonic() + 600
    while len(marks) < 2:
        done = total - celeriac.backlog().unfinished
        for fraction in (0.1, 0.9):
            if fraction not in marks and done >= fraction * total:
                marks[fraction] = (time.monotonic(), sum(cpu_seconds(pid) for pid in pids))
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done} of {total} tasks done after 600 s")
        time.sleep(0.01)
    (t10, cpu10), (t90, cpu90) = marks[0.1], marks[0.9]
    if t90 <= t10:
        raise ValueError(f"{total} tasks drained too fast to measure; ask for more (-n)")
    counted = 0.8 * total
    return (
        f"{counted / (t90 - t10):,.0f} tasks/s, "
        f"{(cpu90 - cpu10) / counted * 1e3:.3f} ms of worker CPU per task"
    )


def _py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [str(py_spy), "record", "--format", "raw", "--rate", "200", "-o", str(out), "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


if __name__ == "__main__":
    raise SystemExit(main())
