"""Testing tasks without a broker: eager mode, an in-memory NATS and its worker.

``eager(app)`` runs tasks in-process as they are submitted; ``memory(app)`` sends them
to an in-memory NATS where the test runs them with ``worker.run_until_idle()``. Both
run the SDK's submit path and the worker runtime's message handling unchanged, so
arguments and results get the same JSON checks, and retries, dead letters,
revocation and canvas behave as on a real worker. No nats-server is needed.
pytest fixtures: ``pytest_plugins = ["celeriac.testing.pytest"]`` in a conftest.py.

Needs the worker runtime: ``pip install 'celeriac[worker]'``.
"""

from __future__ import annotations

from celeriac.testing.eager import always_eager, eager
from celeriac.testing.memory import memory, worker_of
from celeriac.testing.server import MemoryNats
from celeriac.testing.worker import MemoryWorker

__all__ = ["MemoryNats", "MemoryWorker", "always_eager", "eager", "memory", "worker_of"]
