"""Fixtures for worker tests: workers as real subprocesses, a client app, a queue name."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from celeriac.app import Celeriac
from celeriac.broker import Broker
from tests.support import WORKER_APPS, WorkerApp


@pytest.fixture
def worker_app() -> WorkerApp:
    """Workers of these tests run ``wtasks`` from the apps folder next to this file."""
    return WorkerApp("wtasks", WORKER_APPS)


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
