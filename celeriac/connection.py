"""The state of a NATS connection, and how a first connect that failed is abandoned.

nats-py reports a dropped connection through callbacks and logs every reconnect
attempt at ERROR with a traceback. ``Connection`` follows those callbacks, logs one
WARNING when the connection drops and one INFO when it is back, and lets the pull
loop wait for the reconnect instead of sending requests into the void.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nats.aio.client import Client
from nats.errors import StaleConnectionError

from celeriac.exceptions import NatsRefusedError
from celeriac.natsauth import refusal
from celeriac.protocol.names import display_url

log = logging.getLogger(__name__)
ABANDON_TIMEOUT = 2.0


class Connection:
    """The state of one NATS connection, fed by nats-py's callbacks.

    Logs one WARNING when the connection drops and one INFO when it is back, instead
    of nats-py's ERROR with a traceback per reconnect attempt.
    """

    def __init__(self, url: str) -> None:
        self.url = display_url(url)
        self.last_error: BaseException | None = None
        self.closing = False
        self._opened = False
        self._refused_told = False
        self._up = asyncio.Event()
        self._lost_at: float | None = None
        self._on_disconnect: list[Callable[[], None]] = []
        self._on_reconnect: list[Callable[[], None]] = []

    @property
    def connected(self) -> bool:
        """True while connected (no outage under way)."""
        return self._up.is_set()

    async def wait_connected(self) -> None:
        """Return once connected, or once the connection is closed for good."""
        await self._up.wait()

    def on_disconnect(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` whenever the connection drops; returns the remover."""
        self._on_disconnect.append(callback)
        return lambda: self._on_disconnect.remove(callback)

    def on_reconnect(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` whenever the connection is back; returns the remover."""
        self._on_reconnect.append(callback)
        return lambda: self._on_reconnect.remove(callback)

    def opened(self) -> None:
        """The first connect succeeded."""
        self._opened = True
        self._up.set()

    async def error_cb(self, exc: Exception) -> None:
        """nats-py's error callback: attempts failing during an outage are expected.

        A refusal (credentials, TLS) ends a first connect at once: nats-py lets this
        callback's exception out of ``connect``. Later, while reconnecting, it is logged
        once, as the credentials may be fixed (a rotated Secret) while it retries.
        """
        self.last_error = exc
        reason = refusal(exc)
        if reason is not None and not self.closing:
            if not self._opened:
                raise NatsRefusedError(f"NATS at {self.url} refused the connection: {reason}")
            if not self._refused_told:
                self._refused_told = True
                log.warning("NATS at %s refused the connection: %s; still trying", self.url, reason)
            return
        # A lost connection is reported once, by disconnected_cb; other errors (a slow
        # consumer, a permission violation) while connected are worth a warning.
        lost = isinstance(exc, (OSError, TimeoutError, StaleConnectionError))
        if self.connected and not self.closing and not lost:
            log.warning("NATS at %s: %s", self.url, describe(exc))
        else:
            log.debug("NATS at %s: %r", self.url, exc)

    async def disconnected_cb(self) -> None:
        """nats-py's disconnected callback (also called when the connection closes)."""
        self._up.clear()
        for callback in list(self._on_disconnect):
            callback()
        if self.closing or self._lost_at is not None:
            return
        self._lost_at = asyncio.get_running_loop().time()
        log.warning("disconnected from NATS at %s; reconnecting", self.url)

    async def reconnected_cb(self) -> None:
        """nats-py's reconnected callback."""
        self._up.set()
        self._refused_told = False
        for callback in list(self._on_reconnect):
            callback()
        if self._lost_at is not None:
            lost = asyncio.get_running_loop().time() - self._lost_at
            self._lost_at = None
            log.info("reconnected to NATS at %s after %.1f s", self.url, lost)

    async def closed_cb(self) -> None:
        """nats-py's closed callback: wake the waiters, whose next call fails clearly."""
        if not self.closing:
            log.warning("the connection to NATS at %s is closed", self.url)
        self._up.set()


async def abandon(nc: Client, connection: Connection) -> None:
    """Stop a first connect that failed: its attempts and their tasks."""
    connection.closing = True
    # It may have failed before it began; after a failed TLS handshake nats-py waits
    # for a transport that never finishes closing, so the wait is bounded.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), ABANDON_TIMEOUT)


async def close_disconnected(nc: Client) -> None:
    """Close a connection that is reconnecting (nats-py refuses to drain it).

    nats-py then writes what it buffered to the dead socket, and when that fails it
    stops before ending its subscriptions' tasks: end them here, or they outlive the loop.
    """
    try:
        await nc.close()
    except OSError:
        for sub in list(nc._subs.values()):  # no public way after a failed close
            sub._stop_processing()
        nc._subs.clear()
    await asyncio.sleep(0)  # let the cancelled tasks finish


def describe(exc: BaseException) -> str:
    """``Type: message`` of ``exc`` (just the type when it has no message)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
