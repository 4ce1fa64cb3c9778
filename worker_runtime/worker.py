"""The worker process: connect, consume every queue, run tasks, and shut down cleanly.

On SIGTERM or SIGINT the worker stops pulling, gives running tasks until the
drain timeout, then NAKs what is left (no delay, so another worker takes it at
once) and exits 0. A second signal skips the wait: it NAKs everything held and
exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from celeriac import __version__
from celeriac.exceptions import CeleriacError, NatsRefusedError
from celeriac.protocol.names import HDR_TASK
from celeriac.protocol.workers import (
    MAX_ACTIVE_LISTED,
    WORKER_NAME_ENV,
    ActiveTask,
    WorkerRecord,
)
from celeriac.worker_runtime.catchup import CatchUp
from celeriac.worker_runtime.consuming import QueueConsumer
from celeriac.worker_runtime.delivery import Delivery
from celeriac.worker_runtime.events import open_events
from celeriac.worker_runtime.execution import Outcome, Pool
from celeriac.worker_runtime.exhausted import ExhaustedDeliveries
from celeriac.worker_runtime.handling import Handler
from celeriac.worker_runtime.health import HealthServer
from celeriac.worker_runtime.heartbeats import Heartbeats
from celeriac.worker_runtime.metrics import WorkerMetrics
from celeriac.worker_runtime.options import PoolKind, WorkerOptions
from celeriac.worker_runtime.processes import ProcessPool
from celeriac.worker_runtime.registry import Registry
from celeriac.worker_runtime.revoked import RevokedMirror
from celeriac.worker_runtime.signalling import ready, shutdown
from celeriac.worker_runtime.slots import SlotPool
from celeriac.worker_runtime.threads import ThreadPool

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.broker import Broker

log = logging.getLogger(__name__)
T = TypeVar("T")

# NATS may be away this long (a server restart) before /healthz reports it.
_DISCONNECT_GRACE = 10.0
# Most seconds between connects NATS refused (credentials, TLS).
REFUSED_RETRY_MAX = 30.0


class _Slot:
    """The execution slot of one message, given back exactly once.

    It is free as soon as the attempt returned (the next message can start while
    this one's result is stored), except that an orphaned thread or coroutine
    keeps it until it really ends.
    """

    def __init__(self, slots: SlotPool) -> None:
        self._slots = slots
        self._handed_back = False

    def free(self) -> None:
        if not self._handed_back:
            self._handed_back = True
            self._slots.release(1)

    def free_after(self, outcome: Outcome) -> None:
        if outcome.still_running is None:
            self.free()
        elif not self._handed_back:
            self._handed_back = True
            outcome.still_running.add_done_callback(lambda _: self._slots.release(1))


def make_pool(options: WorkerOptions) -> Pool:
    """The pool ``--pool`` names."""
    if options.pool is PoolKind.PROCESSES:
        return ProcessPool(
            options.app_spec, options.concurrency, options.max_tasks_per_child, options.loglevel
        )
    return ThreadPool(options.concurrency)


class Worker:
    """One worker: its queues, slots, pool, probes and in-flight messages."""

    def __init__(self, app: Celeriac, options: WorkerOptions) -> None:
        self.app = app
        self.options = options
        self.queues = options.queues or (app.default_queue,)
        # -n, else the pod's name under Kubernetes (the operator sets it), else host-pid.
        self.name = (
            options.hostname
            or os.environ.get(WORKER_NAME_ENV)
            or f"{socket.gethostname()}-{os.getpid()}"
        )
        self._started = datetime.now(UTC)
        self.metrics = WorkerMetrics()
        self.stopping = asyncio.Event()
        self.forced = asyncio.Event()
        self.draining = False
        self._slots = SlotPool(options.concurrency)
        self._pool = make_pool(options)
        self._health = HealthServer(options.health_port, self, self.metrics)
        self._broker: Broker | None = None
        self._handler: Handler | None = None
        self._revoked: RevokedMirror | None = None
        self._exhausted: ExhaustedDeliveries | None = None
        self._catch_up: CatchUp | None = None
        self._registry: Registry | None = None
        self._consumers: list[QueueConsumer] = []
        self._running: dict[asyncio.Task[None], Delivery] = {}
        self.metrics.count_in_flight(lambda: len(self._running))
        # Every held message gets in_progress until settled, also while its result is
        # stored through a NATS reconnect, so it is not redelivered meanwhile.
        self._heartbeats = Heartbeats(self._running.values)
        self._disconnected_since: float | None = None
        self._not_connected = "starting"  # why there is no connection yet, for /readyz

    def record(self) -> WorkerRecord:
        """What this worker says of itself in the workers bucket."""
        succeeded, failed, retried = self.metrics.totals()
        return WorkerRecord(
            name=self.name,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            queues=list(self.queues),
            pool=self.options.pool.value,
            concurrency=self.options.concurrency,
            running=len(self._running),
            succeeded=succeeded,
            failed=failed,
            retried=retried,
            state="draining" if self.draining else "running",
            started=self._started,
            seen=datetime.now(UTC),
            active=self._active(),
            registered=sorted(self.app.tasks),
        )

    def _active(self) -> list[ActiveTask]:
        """The first ``MAX_ACTIVE_LISTED`` messages held, read off the deliveries at
        heartbeat time so running a task costs nothing more."""
        loop_now, now = asyncio.get_running_loop().time(), datetime.now(UTC)
        return [
            ActiveTask(
                id=d.task_id,
                task=d.task or (d.msg.headers or {}).get(HDR_TASK),
                queue=d.queue,
                started=now - timedelta(seconds=max(0.0, loop_now - d.received)),
            )
            for d in itertools.islice(self._running.values(), MAX_ACTIVE_LISTED)
        ]

    # Probes -------------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, str]:
        """Alive unless NATS has been disconnected for longer than a restart takes."""
        nc = self._broker.nc if self._broker is not None else None
        if nc is None:
            return True, "starting"
        if nc.is_connected:
            self._disconnected_since = None
            return True, "nats connected"
        now = time.monotonic()
        if self._disconnected_since is None:
            self._disconnected_since = now
        if now - self._disconnected_since < _DISCONNECT_GRACE:
            return True, "nats reconnecting"
        return False, f"nats disconnected for {now - self._disconnected_since:.0f}s"

    def readiness(self) -> tuple[bool, str]:
        """Ready when every queue's consumer is bound and the worker is not draining."""
        if self.draining:
            return False, "draining"
        if not self._consumers:
            return False, self._not_connected
        unbound = [c.queue for c in self._consumers if not c.bound]
        if unbound:
            return False, f"queues not bound: {', '.join(unbound)}"
        return True, f"consuming {', '.join(self.queues)}"

    # Lifecycle ----------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until a signal; return the exit code."""
        self._install_signals()
        await self._health.start()
        signalled_ready = False
        try:
            broker = await self._connect()
            if broker is None:
                return 0
            self._broker = broker
            self._not_connected = "binding queues"
            await self._pool.start()
            self._revoked = RevokedMirror(broker.nc, broker.revocations)
            await self._revoked.start()
            self._handler = Handler(
                self.app, broker, self._pool, self.metrics, self.name, self._revoked
            )
            self._revoked.on_terminate = self._handler.terminator.terminate
            if self.options.events:
                dropped = self.metrics.events_dropped
                self._handler.events = await open_events(broker, self.name, dropped)
            log.info(
                "worker %s: pool %s, concurrency %d, queues %s",
                self.name, self.options.pool.value, self.options.concurrency, ",".join(self.queues),
            )  # fmt: skip
            self._exhausted = ExhaustedDeliveries(broker, self.queues, self.name)
            await self._exhausted.start()
            self._heartbeats.start()
            consumers = [asyncio.create_task(c.run()) for c in self._make_consumers(broker)]
            self._catch_up = CatchUp(broker, self.queues)
            self._catch_up.soon()
            self._registry = Registry(broker, self.name, self.record)
            await self._registry.start()
            await ready(self)
            signalled_ready = True
            await self.stopping.wait()
            return await self._drain(consumers)
        finally:
            if signalled_ready:  # before the connection closes: receivers may still use it
                await shutdown(self)
            await self._heartbeats.stop()
            if self._registry is not None:
                await self._registry.stop()
            if self._catch_up is not None:
                await self._catch_up.stop()
            if self._exhausted is not None:
                await self._exhausted.stop()
            if self._revoked is not None:
                await self._revoked.stop()
            await self._pool.stop()
            await self._health.stop()
            if self._handler is not None and self._handler.events is not None:
                await self._handler.events.close()  # the last events, before the connection
            with contextlib.suppress(Exception):
                await self.app.aclose()

    def _make_consumers(self, broker: Broker) -> list[QueueConsumer]:
        # Each queue may ask for its share of the slots at once, so one busy queue
        # cannot hold every free slot in a pull request while another has work.
        share = max(1, self.options.concurrency // len(self.queues))
        self._consumers = [
            QueueConsumer(
                q,
                broker,
                self._slots,
                self._dispatch,
                self._heartbeats,
                declare=bool(self.app.declare_queues),
                share=share,
                stopping=self.stopping,
            )
            for q in self.queues
        ]
        return self._consumers

    async def _connect(self) -> Broker | None:
        """Connect to NATS, trying again until it is up or a stop signal comes."""
        told = ""
        refusals = 0
        while not self.stopping.is_set():
            try:
                return await self._unless_stopped(self.app.broker())
            except NatsRefusedError as exc:
                # Refused at once, so wait between attempts: a fixed Secret is picked
                # up by the next one, and the pod stays up (unready), not crash-looping.
                refusals += 1
                delay = min(REFUSED_RETRY_MAX, 2.0**refusals)
                if str(exc) != told:
                    told = self._not_connected = str(exc)
                    log.error(
                        "%s (with %s); trying again every %g s at most",
                        exc, self.app.nats_auth.summary(), REFUSED_RETRY_MAX,
                    )  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
            except CeleriacError as exc:  # each attempt gives up after the connect timeout
                if not told:
                    told = self._not_connected = str(exc)
                    log.warning("%s; trying again until NATS is up", exc)
        return None

    async def _unless_stopped(self, work: Awaitable[T]) -> T | None:
        """Await ``work`` unless a stop signal comes first (NATS may be down at start:
        the connection retries until it is up)."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task.done():
            return task.result()
        task.cancel()
        log.info("stopped before connecting to NATS at %s", self.app.nats_url)
        return None

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if not self.stopping.is_set():
            log.info(
                "%s: draining (up to %gs); send it again to stop at once",
                sig.name, self.options.drain_timeout,
            )  # fmt: skip
            self.draining = True
            self.stopping.set()
        else:
            log.warning("%s again: stopping now and NAKing held messages", sig.name)
            self.forced.set()

    def _dispatch(self, delivery: Delivery) -> None:
        assert self._handler is not None
        slot = _Slot(self._slots)
        task = asyncio.create_task(self._handler.handle(delivery, slot.free_after))
        self._running[task] = delivery
        task.add_done_callback(lambda t: self._finished(t, slot))

    def _finished(self, task: asyncio.Task[None], slot: _Slot) -> None:
        self._running.pop(task, None)
        slot.free()  # when no attempt ran, or the handler was cancelled

    async def _drain(self, consumers: list[asyncio.Task[None]]) -> int:
        if self._registry is not None:
            await self._registry.beat()  # now draining
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.drain_timeout
        forced = asyncio.ensure_future(self.forced.wait())
        log.info("draining: %d task(s) running", len(self._running))
        pending: set[asyncio.Future[Any]] = {*consumers, *self._running}
        while pending and not self.forced.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait({*pending, forced}, timeout=remaining,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            pending = {t for t in [*consumers, *self._running] if not t.done()}
        forced.cancel()
        for consumer in consumers:
            consumer.cancel()
        left = dict(self._running)
        if left:
            log.warning("drain timeout: NAKing %d unfinished task(s) for redelivery", len(left))
        for running, delivery in left.items():
            running.cancel()
            await delivery.nak_quietly()
        await asyncio.gather(*consumers, *left, return_exceptions=True)
        log.info("worker stopped")
        return 1 if self.forced.is_set() else 0
