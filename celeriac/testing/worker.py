"""A worker for the in-memory server: the real message handling, driven by the test.

``MemoryWorker`` takes deliveries from the in-memory server's queues and gives each
to the worker runtime's ``Handler``, the code a ``celeriac worker`` runs for every
message: signature checks, revocation and expiry, running the task in the thread
pool (``async def`` tasks on the loop), time limits, storing the result, retries
and their backoff, dead letters, chain steps and chord callbacks. Only the parts
around it are left out: pulling from NATS, execution slots, heartbeats, the
worker registry, probes, events and the drain on shutdown.

Nothing runs until the test says so: ``run_until_idle()`` handles deliveries, one
at a time and in order, until no queue has one left. A delayed message (a
countdown, a retry's backoff) is delivered at once unless ``skip_delays=False``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, cast

from nats.aio.msg import Msg

from celeriac.testing.client import MEMORY_URL, MemoryConnector
from celeriac.testing.server import MemoryNats, Taken
from celeriac.worker_runtime.delivery import Delivery
from celeriac.worker_runtime.handling import Handler
from celeriac.worker_runtime.metrics import WorkerMetrics
from celeriac.worker_runtime.revoked import RevokedMirror
from celeriac.worker_runtime.threads import ThreadPool

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.protocol.envelope import DeadLetter, ResultRecord, TaskMessage
    from celeriac.worker_runtime.execution import Outcome

# Threads for sync tasks. A task that submits a task waits on its thread while, in eager
# mode, the one it submitted runs on another: this bounds how deep that may nest.
THREADS = 32
# Seconds between in_progress calls the handler would make; nothing sends them here.
_HEARTBEAT = 10.0
NAME = "memory-worker"


class MemoryMsg:
    """One delivery from the in-memory server, where nats-py's ``Msg`` would be."""

    def __init__(self, server: MemoryNats, taken: Taken) -> None:
        self._server = server
        self._stream = taken.stream
        self._seq = taken.message.seq
        self.subject = taken.message.subject
        self.data = taken.message.data
        self.headers: dict[str, str] | None = dict(taken.message.headers) or None
        self.reply = taken.reply

    async def ack(self) -> None:
        """Done: the message leaves the queue."""
        self._server.settle(self._stream, self._seq, "ack")

    async def nak(self, delay: float | None = None) -> None:
        """Deliver it again, after ``delay`` seconds."""
        self._server.settle(self._stream, self._seq, "nak", delay)

    async def term(self) -> None:
        """Never deliver it again."""
        self._server.settle(self._stream, self._seq, "term")

    async def in_progress(self) -> None:
        """Nothing redelivers a message here while it is held."""


def _ran(outcome: Outcome) -> None:
    """The handler's "attempt returned" callback: there are no slots to free here."""


class MemoryWorker:
    """The worker of ``app`` on ``server``, for the queues given (default: every queue)."""

    def __init__(
        self,
        app: Celeriac,
        server: MemoryNats,
        *,
        queues: list[str] | None = None,
        name: str = NAME,
    ) -> None:
        self.app = app
        self.server = server
        self.queues = list(queues) if queues else None
        self.name = name
        # The worker's own counters: received, succeeded, retried, failed, dead_lettered...
        self.metrics = WorkerMetrics()
        self.pool = ThreadPool(THREADS)
        self._handlers: dict[asyncio.AbstractEventLoop, Handler] = {}
        self._stopping: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        return f"<MemoryWorker {self.name} queues={self.queues or 'all'}>"

    async def _handler(self) -> Handler:
        """The handler for the running loop, on a connection of its own to the server
        (as a worker process has its own, whatever the app submits through)."""
        loop = asyncio.get_running_loop()
        handler = self._handlers.get(loop)
        if handler is None:
            for old in [lp for lp in self._handlers if lp.is_closed()]:
                del self._handlers[old]
            connect = MemoryConnector(self.server)
            broker = await connect(
                MEMORY_URL, result_ttl=self.app.result_ttl, signing_keys=self.app.signing_keys
            )
            # As the worker wires them: revocations followed in memory, and a revoke
            # with terminate=True stopping the attempt it names.
            revoked = RevokedMirror(broker.nc, broker.revocations)
            await revoked.start()
            handler = Handler(self.app, broker, self.pool, self.metrics, self.name, revoked)
            revoked.on_terminate = handler.terminator.terminate
            self._handlers[loop] = handler
        return handler

    async def arun_until_idle(self, *queues: str, skip_delays: bool = True) -> int:
        """Handle deliveries until none is left; how many were handled.

        ``queues`` narrows the worker's queues for this call. With ``skip_delays``
        (the default) a delayed message is due at once; without, it waits its time
        and this returns while only delayed messages are left.
        """
        wanted = list(queues) or self.queues
        handler = await self._handler()
        loop = asyncio.get_running_loop()
        handled = 0
        while (taken := self.server.take(wanted, skip_delays=skip_delays)) is not None:
            msg = cast(Msg, MemoryMsg(self.server, taken))
            delivery = Delivery(msg, taken.queue, _HEARTBEAT, loop.time())
            await handler.handle(delivery, _ran)
            handled += 1
        return handled

    def run_until_idle(self, *queues: str, skip_delays: bool = True) -> int:
        """Blocking twin of ``arun_until_idle`` (runs on the app's background loop)."""
        return self.app.client.run_sync(
            lambda: self.arun_until_idle(*queues, skip_delays=skip_delays),
            call="MemoryWorker.run_until_idle()",
            twin="MemoryWorker.arun_until_idle()",
        )

    # What a test looks at -------------------------------------------------------------------

    def tasks(self, queue: str | None = None) -> list[TaskMessage]:
        """The tasks waiting in ``queue`` (None: every queue), delayed ones included."""
        return self.server.tasks(queue)

    def dead_letters(self, queue: str | None = None) -> list[DeadLetter]:
        """The dead letters of ``queue`` (None: every queue), oldest first."""
        return self.server.dead_letters(queue)

    def result(self, task_id: str) -> ResultRecord | None:
        """The result record stored under ``task_id`` (None: nothing stored yet)."""
        return self.server.result(task_id)

    def count(self, what: str, task: str | None = None) -> int:
        """A counter of the worker's metrics for ``task`` (None: every task): ``received``,
        ``succeeded``, ``failed``, ``retried``, ``dead_lettered`` or ``revoked``."""
        family_name = f"celeriac_worker_tasks_{what}"
        for family in self.metrics.collect():
            if family.name == family_name:
                samples = [s for s in family.samples if s.name.endswith("_total")]
                return int(sum(s.value for s in samples if task in (None, s.labels["task"])))
        raise ValueError(
            f"unknown counter {what!r}: use received, succeeded, failed, retried, "
            "dead_lettered or revoked"
        )

    def close(self) -> None:
        """Close the handlers' connections, each on its loop, and let the pool's threads
        end (they are idle once the test is done)."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        handlers, self._handlers = self._handlers, {}
        for loop, handler in handlers.items():
            if loop is running:
                self._stopping.append(loop.create_task(_close(handler)))
            elif not loop.is_closed() and loop.is_running():
                # The app's background loop, on its own thread: closed before it stops.
                # One that does not close in time is left to it: the block still ends
                # and the app gets its connection back.
                closing = asyncio.run_coroutine_threadsafe(_close(handler), loop)
                with contextlib.suppress(Exception):
                    closing.result(5)
        stop = self.pool.stop()
        if running is None:
            asyncio.run(stop)
        else:
            self._stopping.append(running.create_task(stop))


async def _close(handler: Handler) -> None:
    """Close what a handler holds open (its publish-acknowledgement timer among them)."""
    await handler.revoked.stop()
    await handler.broker.close()
