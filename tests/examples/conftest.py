"""Fixtures for the example apps: their own nats-server and a real worker subprocess.

The examples live in examples/apps (not a package); that folder goes on sys.path
for each test and is the worker's working directory, as a user running them from
there would have it.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from celeriac_devenv.nats import NatsServer, remove_workdir, start_nats
from celeriac_devenv.processes import ManagedProcess, free_port, spawn

from tests.support import wait_until

APPS = Path(__file__).resolve().parents[2] / "examples" / "apps"


@pytest.fixture(autouse=True)
def examples_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """``shop.tasks``, ``flask_app`` and ``fastapi_app`` import from examples/apps."""
    monkeypatch.syspath_prepend(APPS)


@pytest.fixture(scope="module")
def shop_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server of the examples' own, so the shop's "emails" queue is theirs alone."""
    server = start_nats(tmp_path_factory.mktemp("shop-nats"))
    yield server
    server.stop()
    remove_workdir(server)


def _ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
        return bool(resp.status == 200)


@pytest.fixture(scope="module")
def shop_worker(
    shop_nats: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    """``celeriac worker -A shop.tasks -Q emails`` run from examples/apps, as the docs say."""
    port = free_port()
    argv = [
        sys.executable, "-m", "celeriac", "worker", "-A", "shop.tasks", "-Q", "emails",
        "-c", "16", "--pool", "asyncio", "--health-port", str(port),
    ]  # fmt: skip
    env = {**os.environ, "CELERIAC_NATS_URL": shop_nats.url, "SHOP_MAIL_LATENCY": "0.01"}
    proc = spawn("shop-worker", argv, log_dir=tmp_path_factory.mktemp("logs"), env=env, cwd=APPS)
    try:
        wait_until(lambda: _ready(port), timeout=30, what="the shop worker", alive=proc)
        yield proc
    finally:
        proc.stop(grace=10)


@pytest.fixture
def shop_app(shop_nats: NatsServer, shop_worker: ManagedProcess) -> Iterator[object]:
    """The examples' Celeriac app, pointed at the examples' NATS (its URL is read at import)."""
    from shop.tasks import app

    app.nats_url = shop_nats.url
    yield app
    app.close()
