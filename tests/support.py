"""Helpers shared by the test suite: polling for a condition and worker subprocesses.

Test code imports them as ``from tests.support import ...``.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard, TypeVar, overload

from celeriac_devenv.processes import ManagedProcess, free_port, spawn
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from celeriac.broker import Broker
from celeriac.protocol import names
from celeriac.protocol.envelope import DeadLetter, ResultRecord

T = TypeVar("T")

WORKER_APPS = Path(__file__).resolve().parent / "worker" / "apps"


class _Poll:
    """The verdict shared by :func:`wait_until` and :func:`await_until`.

    It keeps the last value or exception the check gave, for the failure message.
    """

    def __init__(self, timeout: float, what: str, alive: ManagedProcess | None) -> None:
        self.timeout = timeout
        self.what = what
        self.alive = alive
        self.deadline = time.monotonic() + timeout
        self.last: object = None

    def done(self, value: T | None) -> TypeGuard[T]:
        """True when ``value`` ends the wait; raise if the wait cannot succeed any more."""
        if value:
            return True
        self.not_yet(value)
        return False

    def not_yet(self, last: object) -> None:
        """Keep ``last``; raise when the watched process is gone or time is up."""
        self.last = last
        alive = self.alive
        if alive is not None and not alive.alive():
            raise AssertionError(
                f"{alive.name} exited ({alive.popen.returncode}) while waiting for {self.what}:\n"
                f"{alive.log_tail()}"
            )
        if time.monotonic() >= self.deadline:
            log = f"\n{alive.name} log:\n{alive.log_tail()}" if alive is not None else ""
            raise AssertionError(
                f"timed out after {self.timeout} s waiting for {self.what} (last: {last!r}){log}"
            )


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.02,
    alive: ManagedProcess | None = None,
) -> T:
    """Call ``check`` until it returns something truthy, and return that.

    An exception from ``check`` counts as "not yet". Fails after ``timeout`` seconds
    naming ``what``, or at once when the process ``alive`` has exited.
    """
    poll = _Poll(timeout, what, alive)
    while True:
        try:
            value = check()
        except Exception as exc:  # the condition may fail until it holds
            poll.not_yet(exc)
        else:
            if poll.done(value):
                return value
        time.sleep(interval)


@overload
async def await_until(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float,  # noqa: ASYNC109
    what: str,
    interval: float = ...,
    alive: ManagedProcess | None = ...,
) -> T: ...
@overload
async def await_until(
    check: Callable[[], T | None],
    *,
    timeout: float,  # noqa: ASYNC109
    what: str,
    interval: float = ...,
    alive: ManagedProcess | None = ...,
) -> T: ...
async def await_until(
    check: Callable[[], object],
    *,
    # Not asyncio.timeout: that would cancel a check midway and lose the last value.
    timeout: float,  # noqa: ASYNC109
    what: str,
    interval: float = 0.02,
    alive: ManagedProcess | None = None,
) -> object:
    """:func:`wait_until` for async tests: ``check`` may return an awaitable."""
    poll = _Poll(timeout, what, alive)
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:  # the condition may fail until it holds
            poll.not_yet(exc)
        else:
            if poll.done(value):
                return value
        await asyncio.sleep(interval)


@dataclass
class Worker:
    """A worker subprocess (``celeriac worker``) and its health port."""

    process: ManagedProcess
    health_port: int

    def get(self, path: str) -> tuple[int, str]:
        """GET a health endpoint: (status, body)."""
        url = f"http://127.0.0.1:{self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def ready(self) -> bool:
        """True when /readyz answers 200."""
        try:
            return self.get("/readyz")[0] == 200
        except OSError:  # the health server is not listening yet
            return False

    def wait_ready(self, timeout: float = 30.0) -> Worker:
        """Wait for /readyz; fail at once if the worker exits."""
        wait_until(self.ready, timeout=timeout, what="worker /readyz", alive=self.process)
        return self

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the worker's main process."""
        os.kill(self.process.pid, sig)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the worker to exit; return its exit code."""
        try:
            return self.process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            tail = self.process.log_tail()
            raise AssertionError(f"worker still running after {timeout} s:\n{tail}") from None

    def log(self) -> str:
        """Everything the worker logged so far."""
        return self.process.log_path.read_text(errors="replace")


StartWorker = Callable[..., Worker]


@dataclass(frozen=True)
class WorkerApp:
    """What a directory's workers run: the app module, its folder, extra environment."""

    module: str
    apps_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)


def start_worker(
    queues: str,
    *,
    nats_url: str,
    log_dir: Path,
    name: str = "worker",
    app: str = "wtasks",
    apps_dir: Path = WORKER_APPS,
    pool: str = "asyncio",
    concurrency: int = 4,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    wait: bool = True,
) -> Worker:
    """Start ``celeriac worker -A <app> -Q <queues>`` on a free health port.

    ``apps_dir`` goes first on the worker's PYTHONPATH. With ``wait`` it returns once
    the worker is ready, and stops it if it never gets there.
    """
    port = free_port()
    argv = [
        sys.executable, "-m", "celeriac", "worker", "-A", app, "-Q", queues,
        "-c", str(concurrency), "--pool", pool, "--health-port", str(port), *extra,
    ]  # fmt: skip
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(apps_dir), os.environ.get("PYTHONPATH", "")]),
        "CELERIAC_NATS_URL": nats_url,
        **(env or {}),
    }
    worker = Worker(spawn(name, argv, log_dir=log_dir, env=environ, cwd=cwd), port)
    if wait:
        try:
            worker.wait_ready()
        except BaseException:
            worker.process.stop(grace=5)
            raise
    return worker


async def dead_letters(broker: Broker, queue: str) -> list[DeadLetter]:
    """Every dead letter stored for ``queue``."""
    stream = names.dead_letter_stream_name(queue)
    info = await broker.js.stream_info(stream)
    letters = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await broker.js.get_msg(stream, seq)
        letters.append(DeadLetter.model_validate_json(msg.data or b""))
    return letters


async def wait_dead_letters(broker: Broker, queue: str, count: int) -> list[DeadLetter]:
    """Wait (up to 15 s) until ``queue`` has ``count`` dead letters; return them."""

    async def enough() -> list[DeadLetter] | None:
        letters = await dead_letters(broker, queue)
        return letters if len(letters) >= count else None

    return await await_until(enough, timeout=15, what=f"{count} dead letter(s) on {queue}")


async def read_results(js: JetStreamContext, task_ids: list[str]) -> dict[str, ResultRecord]:
    """Each task's result, read by its id (many at a time); absent ids are left out.

    Not one watch of the whole bucket: on a cluster a fresh watch can report its
    initial values done before it has delivered any.
    """
    kv = await js.key_value(names.RESULTS_BUCKET)

    async def one(task_id: str) -> ResultRecord | None:
        try:
            entry = await kv.get(task_id)
        except KeyNotFoundError:
            return None
        return ResultRecord.model_validate_json(entry.value or b"{}")

    records: dict[str, ResultRecord] = {}
    for i in range(0, len(task_ids), 500):
        part = task_ids[i : i + 500]
        for task_id, record in zip(part, await asyncio.gather(*map(one, part)), strict=True):
            if record is not None:
                records[task_id] = record
    return records
