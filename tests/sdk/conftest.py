"""Fixtures for SDK tests: an app per test with its own queue on the session's nats-server."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from celeriac.app import Celeriac
from celeriac.devenv.processes import ManagedProcess, free_port, spawn, wait_until


def unique_queue(prefix: str = "sdk") -> str:
    """A queue name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def queue() -> str:
    """A fresh queue name."""
    return unique_queue()


@pytest.fixture
def app(nats_url: str, queue: str) -> Iterator[Celeriac]:
    """An app whose default queue is this test's own (blocking calls)."""
    application = Celeriac("sdk-tests", nats_url, default_queue=queue)
    yield application
    application.close()


@pytest.fixture
async def aapp(nats_url: str, queue: str) -> AsyncIterator[Celeriac]:
    """An app for async tests; its broker on the test's loop is closed afterwards."""
    application = Celeriac("sdk-tests", nats_url, default_queue=queue)
    yield application
    await application.aclose()


@pytest.fixture
async def raw_nc(nats_url: str) -> AsyncIterator[Client]:
    """A plain nats-py connection, for looking at the server without the SDK."""
    nc = await nats.connect(nats_url)
    yield nc
    await nc.drain()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until true or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


async def await_for(
    condition: Callable[[], object], within: float, what: str, interval: float = 0.02
) -> None:
    """Async ``wait_for``; ``condition`` may be a coroutine function."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(interval)


APPS = Path(__file__).parent / "apps"


@dataclass
class Worker:
    """A worker subprocess of the SDK end-to-end tests."""

    process: ManagedProcess
    health_port: int

    def ready(self) -> bool:
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False


StartWorker = Callable[..., Worker]


@pytest.fixture
def start_worker(tmp_path: Path, nats_url: str) -> Iterator[StartWorker]:
    """Start ``python -m celeriac.worker_runtime -A sdk_canvas_tasks``; stopped afterwards."""
    started: list[Worker] = []

    def start(queue: str, *, pool: str = "asyncio", concurrency: int = 4) -> Worker:
        port = free_port()
        argv = [
            sys.executable, "-m", "celeriac.worker_runtime", "-A", "sdk_canvas_tasks",
            "-Q", queue, "-c", str(concurrency), "--pool", pool, "--health-port", str(port),
        ]  # fmt: skip
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(APPS), os.environ.get("PYTHONPATH", "")]),
            "CELERIAC_NATS_URL": nats_url,
            "SDK_E2E_QUEUE": queue,
        }
        name = f"sdk-worker-{len(started) + 1}"
        worker = Worker(spawn(name, argv, log_dir=tmp_path, env=env), port)
        started.append(worker)
        wait_until(worker.ready, timeout=30, what="worker /readyz", alive=worker.process)
        return worker

    yield start
    for worker in started:
        worker.process.stop(grace=5)
