"""Fixtures for the example apps: their own nats-server and a real worker subprocess.

The examples live in examples/apps (not a package); that folder goes on sys.path
for each test and is the worker's working directory, as a user running them from
there would have it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celeriac_devenv.nats import NatsServer, remove_workdir, start_nats

from tests.support import Worker, start_worker

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


@pytest.fixture(scope="module")
def shop_worker(
    shop_nats: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """``celeriac worker -A shop.tasks -Q emails`` run from examples/apps, as the docs say."""
    worker = start_worker(
        "emails", nats_url=shop_nats.url, log_dir=tmp_path_factory.mktemp("logs"),
        name="shop-worker", app="shop.tasks", apps_dir=APPS, concurrency=16,
        env={"SHOP_MAIL_LATENCY": "0.01"}, cwd=APPS,
    )  # fmt: skip
    yield worker
    worker.process.stop(grace=10)


@pytest.fixture
def shop_app(shop_nats: NatsServer, shop_worker: Worker) -> Iterator[object]:
    """The examples' Celeriac app, pointed at the examples' NATS (its URL is read at import)."""
    from shop.tasks import app

    app.nats_url = shop_nats.url
    yield app
    app.close()
