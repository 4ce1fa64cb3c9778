"""``python -m bench.dashboardmemory``: does the dashboard's memory grow with the tasks it sees?

A dashboard that keeps every task it ever saw grows without bound; Celeriac's reads
what it shows from NATS and keeps nothing per task. This run starts a nats-server,
one worker and ``celeriac dashboard``, polls every API endpoint the page polls (found
in the page and its scripts, or given with ``--endpoint``) while ``-n`` tasks are
submitted and run, samples the dashboard's resident memory (VmRSS) every few
seconds, and prints it at 10%, 50% and 100% of the tasks (10k, 50k and 100k by
default) with the growth between the first and the last mark.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from celeriac_devenv.dashboard import LocalDashboard, start_dashboard

from bench.celeriacnats import CeleriacNats
from bench.contending import WorkerProfile
from bench.servers import running_nats

# Tasks kept submitted but not yet finished, so the worker always has work and the
# dashboard sees submissions and completions interleaved, as in production.
IN_FLIGHT = 10_000
CHUNK = 2_000
MARKS = (0.1, 0.5, 1.0)

_API_PATH = re.compile(r"""["'`](/api/[A-Za-z0-9_./-]*[A-Za-z0-9_])["'`?]""")
_SCRIPT_SRC = re.compile(r"""<script[^>]*\ssrc=["']([^"']+)["']""", re.IGNORECASE)


def api_paths(texts: Iterable[str]) -> list[str]:
    """The fixed ``/api/...`` paths quoted in a page and its scripts (sorted, no duplicates).

    Paths built at run time (with ``${...}`` or string concatenation) are not literal and so
    not matched; pass those with ``--endpoint``.
    """
    return sorted({m.group(1) for text in texts for m in _API_PATH.finditer(text)})


def script_sources(page: str) -> list[str]:
    """The ``src`` of each ``<script>`` of a page."""
    return _SCRIPT_SRC.findall(page)


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"process {pid} has no VmRSS (a zombie?)")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, bytes(exc.read())


def _newest_task(body: bytes) -> str | None:
    try:
        rows = json.loads(body).get("tasks") or []
    except (ValueError, AttributeError):
        return None
    return str(rows[0]["id"]) if rows and "id" in rows[0] else None


def discover_endpoints(base: str) -> list[str]:
    """The API paths the dashboard's page reads: named in the page and the scripts it
    loads, and answering GET (the replay and purge actions are POST only)."""
    status, body = _get(base)
    if status != 200:
        raise RuntimeError(f"the dashboard page answered {status}")
    page = body.decode(errors="replace")
    texts = [page]
    for src in script_sources(page):
        status, script = _get(urllib.parse.urljoin(base, src))
        if status == 200:
            texts.append(script.decode(errors="replace"))
    return [
        p for p in api_paths(texts) if _get(urllib.parse.urljoin(base, p.lstrip("/")))[0] != 405
    ]


@dataclass
class Poller:
    """Polls every endpoint in rounds, like open dashboard pages, on a thread of its own."""

    base: str
    endpoints: list[str]
    interval: float
    statuses: Counter[str] = field(default_factory=Counter)
    # The first answer of each kind that was not 200, for the report.
    examples: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        """Until stopped: GET each endpoint, and the newest task's detail as an open
        panel would, then wait ``interval`` seconds."""
        while not self.stopping.is_set():
            newest: str | None = None
            for path in self.endpoints:
                body = self._poll(path)
                if path == "/api/tasks" and body:
                    newest = _newest_task(body) or newest
            if newest is not None:
                self._poll(f"/api/tasks/{urllib.parse.quote(newest)}", label="/api/tasks/<id>")
            self.stopping.wait(self.interval)

    def _poll(self, path: str, label: str | None = None) -> bytes:
        label = label or path
        self.requests += 1
        try:
            status, body = _get(urllib.parse.urljoin(self.base, path.lstrip("/")))
        except OSError as exc:
            self.statuses[f"{label} {type(exc).__name__}"] += 1
            return b""
        self.statuses[f"{label} {status}"] += 1
        if status != 200:
            self.examples.setdefault(f"{label} {status}", body.decode(errors="replace")[:200])
            return b""
        return body

    def failures(self) -> dict[str, int]:
        """Counts of answers other than 200, by endpoint and status."""
        return {k: v for k, v in sorted(self.statuses.items()) if not k.endswith(" 200")}


@dataclass
class Sample:
    """The dashboard's memory when ``done`` tasks had finished."""

    seconds: float
    done: int
    rss_kib: int


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def measure(
    celeriac: CeleriacNats, dash: LocalDashboard, total: int, every: float, timeout: float
) -> list[Sample]:
    """Submit ``total`` tasks in chunks while they run; sample RSS every ``every`` seconds
    and whenever a mark of :data:`MARKS` is passed."""
    task = celeriac.tasks.anoop
    pid = dash.process.pid
    started = time.monotonic()
    samples = [Sample(0.0, 0, rss_kib(pid))]
    marks = [max(1, round(total * f)) for f in MARKS]
    submitted = 0
    next_sample = started + every
    while True:
        unfinished = celeriac.backlog().unfinished
        done = submitted - unfinished
        now = time.monotonic()
        if not dash.process.alive():
            raise RuntimeError(f"the dashboard exited:\n{dash.process.log_tail()}")
        passed = marks and done >= marks[0]
        if now >= next_sample or passed:
            samples.append(Sample(now - started, done, rss_kib(pid)))
            next_sample = now + every
            print(f"  {done:>7,} tasks done: {_mib(samples[-1].rss_kib)}", file=sys.stderr)
            while marks and done >= marks[0]:
                marks.pop(0)
        if done >= total:
            return samples
        if now - started > timeout:
            raise TimeoutError(f"{done:,} of {total:,} tasks done after {timeout:.0f} s")
        if submitted < total and unfinished < IN_FLIGHT:
            size = min(CHUNK, total - submitted)
            celeriac.app.send_many([task.s() for _ in range(size)])
            submitted += size
        else:
            time.sleep(0.02)


def at_mark(samples: list[Sample], count: int) -> Sample:
    """The first sample taken once ``count`` tasks were done."""
    return next(s for s in samples if s.done >= count)


def report(samples: list[Sample], total: int) -> list[str]:
    """The summary lines: RSS at the start and at each mark, growth, peak."""
    marks = [at_mark(samples, max(1, round(total * f))) for f in MARKS]
    first, last = marks[0], marks[-1]
    growth = last.rss_kib - first.rss_kib
    per_task = growth * 1024 / max(1, last.done - first.done)
    lines = [f"dashboard RSS before any task: {_mib(samples[0].rss_kib)}"]
    lines += [f"dashboard RSS at {m.done:>7,} tasks: {_mib(m.rss_kib)}" for m in marks]
    lines.append(
        f"growth {first.done:,} -> {last.done:,} tasks: {growth / 1024:+.1f} MiB "
        f"({per_task:+.1f} bytes per task); peak {_mib(max(s.rss_kib for s in samples))}; "
        f"{last.seconds:.0f} s"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run one measurement and print it."""
    parser = argparse.ArgumentParser(prog="python -m bench.dashboardmemory", description=__doc__)
    parser.add_argument("-n", "--tasks", type=int, default=100_000)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between RSS samples")
    parser.add_argument(
        "--poll", type=float, default=0.5,
        help="seconds between polling rounds (default 0.5: four pages, each polling every 2 s)",
    )  # fmt: skip
    parser.add_argument(
        "--endpoint", action="append", default=[], help="API path to poll (repeatable); "
        "default: every /api/ path the page and its scripts name",
    )  # fmt: skip
    parser.add_argument("--settle", type=float, default=10.0, help="idle seconds at the end")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)
    if args.tasks < 10:
        parser.error("-n must be at least 10")
    try:
        return _run(args)
    except (RuntimeError, TimeoutError) as exc:
        print(f"dashboardmemory: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    with (
        tempfile.TemporaryDirectory(prefix="celeriac-dashmem-") as scratch,
        running_nats(Path(scratch)) as server,
    ):
        celeriac = CeleriacNats(server.url, Path(scratch))
        try:
            profile = WorkerProfile("asyncio", 1, 100)
            with celeriac.workers(profile):
                dash = start_dashboard(server.url, log_dir=Path(scratch))
                poller = Poller(dash.url, [], args.poll)
                thread = threading.Thread(target=poller.run, daemon=True)
                try:
                    poller.endpoints = args.endpoint or discover_endpoints(dash.url)
                    if not poller.endpoints:
                        raise RuntimeError("found no /api/ path in the page; name them --endpoint")
                    print(f"polling {', '.join(poller.endpoints)}", file=sys.stderr)
                    celeriac.wait_ready(profile, timeout=60)
                    thread.start()
                    # Warm up: the first requests import and connect; that is not growth.
                    deadline = time.monotonic() + 60
                    while poller.requests < 3 * len(poller.endpoints):
                        if time.monotonic() > deadline:
                            raise TimeoutError("the dashboard answered no request in 60 s")
                        time.sleep(0.05)
                    samples = measure(celeriac, dash, args.tasks, args.every, args.timeout)
                    # Idle but still polled: does the memory come back down?
                    time.sleep(args.settle)
                    settled = rss_kib(dash.process.pid)
                finally:
                    poller.stopping.set()
                    if thread.is_alive():
                        thread.join(timeout=30)
                    dash.stop()
        finally:
            celeriac.close()
    for line in report(samples, args.tasks):
        print(line)
    print(f"dashboard RSS {args.settle:.0f} s after the last task (still polled): {_mib(settled)}")
    failures = poller.failures()
    print(
        f"{poller.requests:,} API requests to {len(poller.endpoints)} endpoints"
        + (f"; not 200: {failures}" if failures else ", all 200")
    )
    for kind, body in poller.examples.items():
        print(f"  first {kind}: {body}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
