"""NATS connections of the operator, one per server URL, opened on first use.

Most TaskQueues use the operator's default NATS; a queue may name its own
(``spec.nats.url``). Connections are kept in the operator's memo (no module-level
state) and closed when the operator stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client
from nats.js import JetStreamContext

from celeriac.exceptions import NatsRefusedError
from celeriac.natsauth import NO_AUTH, NatsAuth, refusal
from celeriac.protocol import names

log = logging.getLogger(__name__)


class NatsConnections:
    """Opens and caches one NATS client per URL (a URL may be a comma-separated seed list)."""

    def __init__(self, default_url: str, auth: NatsAuth = NO_AUTH) -> None:
        self.default_url = default_url
        self.auth = auth
        self._clients: dict[str, Client] = {}
        self._refused: dict[str, str] = {}  # URL -> the refusal last logged
        self._lock = asyncio.Lock()

    async def jetstream(self, url: str | None = None, wait: float = 5.0) -> JetStreamContext:
        """A JetStream context on ``url`` (default: the operator's NATS)."""
        target = url or self.default_url
        async with self._lock:
            client = self._clients.get(target)
            if client is None or client.is_closed:
                client = await self._connect(target, wait)
                self._clients[target] = client
        return client.jetstream(timeout=wait)

    def connected(self, url: str | None = None) -> bool:
        """True while the connection to ``url`` (default: the operator's NATS) is up."""
        client = self._clients.get(url or self.default_url)
        return client is not None and client.is_connected

    async def _connect(self, url: str, wait: float) -> Client:
        first = True
        shown = names.display_url(url)

        async def error_cb(exc: Exception) -> None:
            # A refusal ends the first connect at once (nats-py lets this out of
            # connect); later ones, while reconnecting, are the status poll's to report.
            reason = refusal(exc)
            if reason is not None and first:
                raise NatsRefusedError(f"NATS at {shown} refused the operator: {reason}")
            log.debug("NATS at %s: %r", shown, exc)

        client = Client()
        try:
            # Bounded: a server that is down must fail this reconcile, not hang it.
            await asyncio.wait_for(
                client.connect(
                    names.servers(url),
                    name="celeriac-operator",
                    connect_timeout=2,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    error_cb=error_cb,
                    **self.auth.connect_options(),
                ),
                timeout=wait,
            )
        except BaseException as exc:
            # Stop its reconnect attempts; bounded, as after a failed TLS handshake
            # nats-py waits for a transport that never finishes closing.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 2)
            if isinstance(exc, NatsRefusedError) and self._refused.get(url) != str(exc):
                self._refused[url] = str(exc)  # logged once per refusal, not per retry
                log.error("%s; using %s", exc, self.auth.summary())
            raise
        first = False
        if self._refused.pop(url, None) is not None:
            log.info("NATS at %s accepts the operator again", shown)
        return client

    async def close(self) -> None:
        """Close every connection."""
        async with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            try:
                await client.close()
            except Exception as exc:  # closing must never fail the shutdown
                log.warning("closing a NATS connection failed: %s", exc)
