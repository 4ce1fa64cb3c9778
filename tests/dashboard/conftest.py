"""Fixtures for the dashboard: workers running the worker tests' app, a client, a
queue of the test's own, and ``celeriac dashboard`` as a subprocess."""

from __future__ import annotations

import os
import re
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from celeriac_devenv.processes import ManagedProcess, spawn

from celeriac.app import Celeriac
from celeriac.broker import Broker
from tests.support import WORKER_APPS, WorkerApp, wait_until

REPO = Path(__file__).resolve().parents[2]
# Variables a developer's shell may set that would change what the dashboard does.
DASHBOARD_ENV = ("CELERIAC_DASHBOARD_TOKEN", "CELERIAC_DASHBOARD_USERNAME",
                 "CELERIAC_DASHBOARD_PASSWORD", "CELERIAC_DASHBOARD_READ_ONLY")  # fmt: skip


@pytest.fixture
def worker_app() -> WorkerApp:
    """Workers run ``wtasks`` (w.add, w.fail, ...) from the worker tests' apps folder."""
    return WorkerApp("wtasks", WORKER_APPS)


@pytest.fixture
def queue() -> str:
    """A queue name of this test's own."""
    return f"dq-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[Celeriac]:
    """An app for submitting tasks and reading results (it registers no tasks)."""
    app = Celeriac("dashboard-tests-client", nats_url=nats_url)
    yield app
    await app.aclose()


@pytest.fixture
async def broker(client: Celeriac) -> Broker:
    """The client's broker on this test's loop."""
    return await client.broker()


@dataclass
class Dashboard:
    """A ``celeriac dashboard`` subprocess and the address it printed."""

    process: ManagedProcess
    url: str

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, str]:
        """(status, body) of one request to the dashboard."""
        req = urllib.request.Request(
            self.url.rstrip("/") + path, data=body, method=method, headers=dict(headers or {})
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


StartDashboard = Callable[..., Dashboard]


@pytest.fixture
def start_dashboard(tmp_path: Path, nats_url: str) -> Iterator[StartDashboard]:
    """Start ``celeriac dashboard --port 0`` with extra arguments and environment; every
    one started is stopped afterwards."""
    started: list[ManagedProcess] = []

    def start(*argv: str, env: Mapping[str, str] | None = None) -> Dashboard:
        environ = {k: v for k, v in os.environ.items() if k not in DASHBOARD_ENV}
        environ.update({"CELERIAC_NATS_URL": nats_url, "KUBECONFIG": str(tmp_path / "none"),
                        **(env or {})})  # fmt: skip
        process = spawn(
            f"dashboard-{len(started) + 1}",
            [sys.executable, "-m", "celeriac", "dashboard", "--port", "0", *argv],
            log_dir=tmp_path, env=environ, cwd=REPO,
        )  # fmt: skip
        started.append(process)

        def address() -> str | None:
            found = re.search(r"celeriac dashboard on (http://\S+)", process.log_path.read_text())
            return found.group(1) if found else None

        url = wait_until(address, timeout=30, what="the dashboard's address", alive=process)
        return Dashboard(process, url)

    yield start
    for process in started:
        process.stop(grace=5)
