"""pytest fixtures for testing tasks without a broker.

Load them from a ``conftest.py``::

    pytest_plugins = ["celeriac.testing.pytest"]

Each fixture is a function taking the app, so it works with any app however the
project makes it, and undoes what it did when the test ends::

    def test_total(celeriac_eager):
        celeriac_eager(app)
        assert order_total.delay(items).get() == 2499

    def test_queued(celeriac_memory):
        worker = celeriac_memory(app)
        result = send_receipt.delay(42)
        assert [t.task for t in worker.tasks()] == ["shop.tasks.send_receipt"]
        worker.run_until_idle()
        assert result.get(timeout=1)["status"] == "sent"
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import pytest

from celeriac.testing.eager import eager
from celeriac.testing.memory import memory
from celeriac.testing.worker import MemoryWorker

if TYPE_CHECKING:
    from celeriac.app import Celeriac

__all__ = ["celeriac_eager", "celeriac_memory"]


@pytest.fixture
def celeriac_eager() -> Iterator[Callable[[Celeriac], MemoryWorker]]:
    """``celeriac_eager(app)``: run ``app``'s tasks as they are submitted, until the
    test ends; returns the worker (dead letters, counters)."""
    with ExitStack() as stack:
        yield lambda app: stack.enter_context(eager(app))


@pytest.fixture
def celeriac_memory() -> Iterator[Callable[..., MemoryWorker]]:
    """``celeriac_memory(app, queues=None)``: an in-memory NATS for ``app`` until the
    test ends; returns its worker, which runs tasks on ``run_until_idle()``."""

    with ExitStack() as stack:

        def use(app: Celeriac, **options: Any) -> MemoryWorker:
            return stack.enter_context(memory(app, **options))

        yield use
