"""What every contender offers the workloads: enqueue, prefill, backlog, workers, probes.

Workloads are written once against this protocol; each contender module maps it
onto its own client library, so every system is measured the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from celeriac_devenv.processes import ManagedProcess

# The queue every contender uses.
QUEUE = "bench"


@dataclass(frozen=True)
class TaskKind:
    """Which benchmark task to run and its arguments (names shared by all contenders)."""

    name: str  # noop, anoop, sleep, asleep, burn, stamp, astamp
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class WorkerProfile:
    """How workers run: the pool, how many worker commands, and concurrency of each."""

    pool: str
    instances: int
    concurrency: int

    def describe(self) -> str:
        """Short label such as ``prefork 1x2``."""
        return f"{self.pool} {self.instances}x{self.concurrency}"


@dataclass(frozen=True)
class Backlog:
    """Tasks not yet handed to a worker, and tasks not yet finished (incl. the former)."""

    undelivered: int
    unfinished: int


@dataclass(frozen=True)
class LatencySample:
    """One round trip: seconds from submit to task start and to result available."""

    to_start: float
    to_result: float


class Contender(Protocol):
    """One system under test, bound to its running server."""

    name: str

    def enqueue(self, count: int, *, batch: bool) -> float:
        """Enqueue ``count`` no-op tasks from one producer; return the seconds it took."""
        ...

    def prefill(self, kind: TaskKind, count: int) -> None:
        """Enqueue ``count`` tasks of ``kind`` as fast as possible (not measured)."""
        ...

    def backlog(self) -> Backlog:
        """The queue's backlog right now."""
        ...

    def purge(self) -> None:
        """Empty the queue (and stored results); no worker may be running."""
        ...

    def workers(self, profile: WorkerProfile) -> AbstractContextManager[Sequence[ManagedProcess]]:
        """Run workers with ``profile`` for the duration of the block; yields the processes."""
        ...

    def wait_ready(self, profile: WorkerProfile, timeout: float) -> None:
        """Block until every worker of ``profile`` consumes the queue."""
        ...

    def probe(self) -> LatencySample:
        """Submit one stamp task and wait for its result (workers must be running)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
