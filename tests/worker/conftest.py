"""Fixtures for worker tests: workers as real subprocesses, a client app, a queue name."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.devenv.processes import free_port, spawn

APPS = Path(__file__).parent / "apps"
# The helpers module next to this file is imported by the tests by name.
sys.path.insert(0, str(Path(__file__).parent))

from worker_support import WorkerProc  # noqa: E402

T = TypeVar("T")


StartWorker = Callable[..., WorkerProc]


@pytest.fixture
def start_worker(tmp_path: Path, nats_url: str) -> Iterator[StartWorker]:
    """Start workers (``python -m celeriac.worker_runtime``); all are stopped afterwards."""
    started: list[WorkerProc] = []

    def start(
        queues: str,
        *,
        pool: str = "asyncio",
        concurrency: int = 4,
        extra: tuple[str, ...] = (),
        url: str | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> WorkerProc:
        port = free_port()
        argv = [
            sys.executable, "-m", "celeriac.worker_runtime", "-A", "wtasks", "-Q", queues,
            "-c", str(concurrency), "--pool", pool, "--health-port", str(port), *extra,
        ]  # fmt: skip
        environ = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(APPS), os.environ.get("PYTHONPATH", "")]),
            "CELERIAC_NATS_URL": url or nats_url,
            **(env or {}),
        }
        name = f"worker-{len(started) + 1}"
        proc = WorkerProc(spawn(name, argv, log_dir=tmp_path, env=environ), port)
        started.append(proc)
        return proc.wait_ready() if wait else proc

    yield start
    for proc in started:
        proc.process.stop(grace=5)


@pytest.fixture
def queue() -> str:
    """A queue name of this test's own."""
    return f"wq-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[Celeriac]:
    """An app for submitting tasks and reading results (it registers no tasks)."""
    app = Celeriac("worker-tests-client", nats_url=nats_url)
    yield app
    await app.aclose()


@pytest.fixture
async def broker(client: Celeriac) -> Broker:
    """The client's broker on this test's loop."""
    return await client.broker()
