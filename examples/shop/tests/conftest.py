"""Fixtures for the shop's tests: fresh services, and the app in eager or in-memory mode.

No NATS is needed: ``celeriac.testing`` runs the tasks in this process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from celeriac.testing import MemoryWorker

from shop import services
from shop.tasks import app

pytest_plugins = ["celeriac.testing.pytest"]

STOCK = {"sku-apple": 10, "sku-pear": 2, "sku-fig": 5}


@pytest.fixture(autouse=True)
def fresh_services() -> None:
    """Every test starts with the same stock and nothing charged, sent or shipped."""
    services.reset(STOCK)


@pytest.fixture
def eager_shop(celeriac_eager: Callable[..., MemoryWorker]) -> MemoryWorker:
    """Tasks run as soon as they are submitted."""
    return celeriac_eager(app)


@pytest.fixture
def shop_worker(celeriac_memory: Callable[..., MemoryWorker]) -> MemoryWorker:
    """Tasks wait in memory until the test runs ``shop_worker.run_until_idle()``."""
    return celeriac_memory(app)


@pytest.fixture
def make_order() -> Callable[..., dict[str, Any]]:
    """``make_order(card="tok_visa", id="o-1", sku_apple=2)``: an order as the web shop
    submits it (``sku_apple=2`` asks for two of sku-apple)."""

    def make(card: str = "tok_visa", id: str = "o-1", **items: int) -> dict[str, Any]:
        lines = {sku.replace("_", "-"): n for sku, n in (items or {"sku_apple": 2}).items()}
        return {"id": id, "email": "ada@example.com", "card": card, "items": lines}

    return make
