"""Fixtures for the Django integration: the example shop (examples/django-shop) set up
in this process against the session's nats-server, and its worker as a subprocess.

The shop runs with ``shop_test_settings`` (tests/django/apps): its settings plus a
second database and a second app. Both databases are SQLite files in a temporary
folder, so the worker process sees what the test process commits.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from celeriac.app import Celeriac
from celeriac.protocol import names
from tests.support import Worker, start_worker

SHOP = Path(__file__).resolve().parents[2] / "examples" / "django-shop"
APPS = Path(__file__).resolve().parent / "apps"
SETTINGS = "shop_test_settings"


@pytest.fixture(scope="session")
def shop_env(tmp_path_factory: pytest.TempPathFactory, nats_url: str) -> dict[str, str]:
    """The environment the shop runs with, here and in its worker."""
    folder = tmp_path_factory.mktemp("django-shop")
    return {
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "SHOP_DATABASE": str(folder / "shop.sqlite3"),
        "SHOP_AUDIT_DATABASE": str(folder / "audit.sqlite3"),
        "SHOP_QUEUE": f"django-{uuid.uuid4().hex[:12]}",
        "CELERIAC_NATS_URL": nats_url,
        "PYTHONPATH": os.pathsep.join([str(SHOP), str(APPS), os.environ.get("PYTHONPATH", "")]),
    }


@pytest.fixture(scope="session")
def shop(shop_env: dict[str, str]) -> Iterator[Celeriac]:
    """The shop's app, with Django set up in this process and the database migrated."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in shop_env.items():
            if key != "PYTHONPATH":
                patch.setenv(key, value)
        patch.syspath_prepend(str(APPS))
        patch.syspath_prepend(str(SHOP))
        import shopsite
        from django.conf import settings
        from django.core.management import call_command

        if settings.SETTINGS_MODULE != SETTINGS:
            pytest.skip(f"Django was set up with {settings.SETTINGS_MODULE} by another test")
        call_command("migrate", verbosity=0)
        # Django is set up: later tests' subprocesses (a Celery worker among them) must
        # not find themselves in the shop's Django project.
        patch.delenv("DJANGO_SETTINGS_MODULE")
        yield shopsite.app
        shopsite.app.close()


@pytest.fixture(scope="module")
def shop_worker(
    shop: Celeriac, shop_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """``celeriac worker -A shopsite`` run from the project folder, as docs/django.md says."""
    worker = start_worker(
        shop.default_queue, nats_url=shop_env["CELERIAC_NATS_URL"],
        log_dir=tmp_path_factory.mktemp("django-logs"), name="django-worker", app="shopsite",
        apps_dir=SHOP, pool="threads", concurrency=2, env=shop_env, cwd=SHOP,
    )  # fmt: skip
    yield worker
    worker.process.stop(grace=5)


def published(nats_url: str, queue: str) -> int:
    """How many messages were ever published to ``queue`` (its stream's last sequence;
    0 when the stream does not exist yet). Consuming them does not lower it."""

    async def last_seq() -> int:
        nc = await nats.connect(nats_url)
        try:
            info = await nc.jetstream().stream_info(names.stream_name(queue))
        except nats.js.errors.NotFoundError:
            return 0
        finally:
            await nc.drain()
        return int(info.state.last_seq)

    return asyncio.run(last_seq())
