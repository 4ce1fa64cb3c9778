"""The way to NATS that an app, its result handles and its signatures share.

A ``Client`` holds the connection settings, one connected ``Broker`` per event loop,
and the background loop that blocking calls run on (``SyncBridge``). It knows
nothing of tasks: the app registers those, results and canvas only need a client.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from celeriac.broker import DEFAULT_CONNECT_TIMEOUT, Broker
from celeriac.natsauth import NatsAuth
from celeriac.planning import Plan, execute
from celeriac.protocol.signing import SigningKeys
from celeriac.remoteerrors import DEFAULT_EXCEPTION_MODULES
from celeriac.syncbridge import SyncBridge

T = TypeVar("T")

#: What makes a connected broker, with ``Broker.connect``'s arguments (the URL, then
#: keywords). ``Broker.connect`` itself unless a client is given another (``use_connector``).
Connector = Callable[..., Coroutine[Any, Any, Broker]]


class Client:
    """Connection settings, a broker per event loop, and the bridge for blocking calls."""

    def __init__(
        self,
        name: str,
        nats_url: str,
        *,
        auth: NatsAuth,
        declare_queues: bool,
        result_ttl: float,
        default_queue: str,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        signing_keys: SigningKeys | None = None,
    ) -> None:
        self.name = name
        self.nats_url = nats_url
        self.auth = auth
        self.declare_queues = declare_queues
        self.result_ttl = result_ttl
        self.default_queue = default_queue
        self.connect_timeout = connect_timeout
        self.signing_keys = signing_keys
        self._brokers: dict[asyncio.AbstractEventLoop, asyncio.Future[Broker]] = {}
        self._lock = threading.Lock()
        self._bridge = SyncBridge(name)
        self.connector: Connector | None = None
        # Modules whose exceptions results re-raise as themselves (celeriac.remoteerrors).
        self.exception_modules: tuple[str, ...] = DEFAULT_EXCEPTION_MODULES

    @property
    def connected(self) -> bool:
        """True while a broker made on a loop still running exists (until closed)."""
        with self._lock:
            return any(not loop.is_closed() for loop in self._brokers)

    async def broker(self) -> Broker:
        """The connected broker for the running event loop (one per loop, made on first use).

        Raises ``CeleriacError`` when the first connect fails within ``connect_timeout``;
        the next call tries again.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            for old in [lp for lp in self._brokers if lp.is_closed()]:
                del self._brokers[old]  # a finished loop's connection died with it
            future = self._brokers.get(loop)
            if future is None or _failed(future):
                # In a context of its own: the connection's background tasks start here
                # and must not keep the first caller's context (its trace span, say).
                connect = self.connector or Broker.connect
                future = loop.create_task(
                    connect(
                        self.nats_url,
                        declare=self.declare_queues,
                        result_ttl=self.result_ttl,
                        auth=self.auth,
                        connect_timeout=self.connect_timeout,
                        signing_keys=self.signing_keys,
                    ),
                    context=contextvars.Context(),
                )
                self._brokers[loop] = future
        try:
            return await asyncio.shield(future)
        except Exception:
            with self._lock:
                if self._brokers.get(loop) is future:
                    del self._brokers[loop]
            raise

    def use_connector(self, connector: Connector | None) -> None:
        """Make brokers with ``connector`` from now on (None: ``Broker.connect``).

        The background loop's broker is closed; brokers made on other loops are
        forgotten, so the next call on any loop connects anew. ``celeriac.testing``
        puts its in-memory NATS in place this way.
        """
        self.close()
        with self._lock:
            self._brokers.clear()
            self.connector = connector

    def run_sync(
        self,
        factory: Callable[[], Coroutine[Any, Any, T]],
        *,
        call: str,
        twin: str,
        timeout: float | None = None,
    ) -> T:
        """Run a coroutine on the background loop from blocking code (see ``SyncBridge``)."""
        return self._bridge.run(factory, call=call, twin=twin, timeout=timeout)

    async def asubmit(self, plan: Plan) -> None:
        """Publish ``plan`` on the running loop."""
        await execute(await self.broker(), plan)

    def submit(self, plan: Plan) -> None:
        """Publish ``plan`` from blocking code."""
        self.run_sync(lambda: self.asubmit(plan), call="submitting a task", twin="the a* twin")

    async def aclose(self) -> None:
        """Close this loop's broker, and the background loop used by blocking calls."""
        loop = asyncio.get_running_loop()
        with self._lock:
            future = self._brokers.pop(loop, None)
        if future is not None:
            await _close(future)
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Close the background loop's broker and stop it (blocking calls reopen it)."""
        bridge_loop = self._bridge.loop
        if bridge_loop is None:
            return

        async def shutdown() -> None:
            with self._lock:
                future = self._brokers.pop(bridge_loop, None)
            if future is not None:
                await _close(future)

        self._bridge.close(shutdown)


def _failed(future: asyncio.Future[Broker]) -> bool:
    """True for a connect that failed, or a broker whose connection closed for good."""
    if not future.done():
        return False
    if future.cancelled() or future.exception() is not None:
        return True
    return future.result().nc.is_closed


async def _close(future: asyncio.Future[Broker]) -> None:
    """Close the broker ``future`` made, or stop it connecting."""
    if not future.done():
        future.cancel()  # Broker.connect closes what it opened
    elif not future.cancelled() and future.exception() is None:
        await future.result().close()
