"""Fixtures for SDK tests: an app per test with its own queue on the session's nats-server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from celeriac.app import Celeriac
from tests.support import WorkerApp

APPS = Path(__file__).parent / "apps"


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


@pytest.fixture
def worker_app(queue: str) -> WorkerApp:
    """Workers of the SDK tests run ``sdk_canvas_tasks``, whose default queue is the test's."""
    return WorkerApp("sdk_canvas_tasks", APPS, env={"SDK_E2E_QUEUE": queue})
