"""``memory(app)``: the app talks to an in-memory NATS, and a test drives its worker.

Inside the block every submit (``delay``, ``apply_async``, ``send_task``, canvas,
``send_many``) goes through the SDK's own publishing path to the in-memory server
instead of NATS; results, revocations and dead letters live there too. Nothing
runs until the test calls ``worker.run_until_idle()``. On leaving the block the
app goes back to what it used before, and what the server held is gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from celeriac.testing.client import MemoryConnector
from celeriac.testing.server import MemoryNats
from celeriac.testing.worker import MemoryWorker

if TYPE_CHECKING:
    from celeriac.app import Celeriac


def install(app: Celeriac, *, queues: list[str] | None = None) -> MemoryWorker:
    """Point ``app`` at a fresh in-memory NATS until told otherwise; its worker."""
    server = MemoryNats()
    worker = MemoryWorker(app, server, queues=queues)
    app.client.use_connector(MemoryConnector(server, worker))
    return worker


def worker_of(app: Celeriac) -> MemoryWorker | None:
    """The memory worker of the in-memory NATS ``app`` uses now, or None (real NATS)."""
    connector = app.client.connector
    return connector.worker if isinstance(connector, MemoryConnector) else None


@contextmanager
def memory(app: Celeriac, *, queues: list[str] | None = None) -> Iterator[MemoryWorker]:
    """Point ``app`` at a fresh in-memory NATS for the block; yields its worker.

    ``queues`` limits the queues the worker takes tasks from (default: every queue).
    Blocks may nest: leaving one puts back what the app used before it.
    """
    previous = app.client.connector
    worker = install(app, queues=queues)
    try:
        yield worker
    finally:
        worker.close()
        app.client.use_connector(previous)
