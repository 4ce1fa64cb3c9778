"""NATS connections of the operator, one per server URL, opened on first use.

Most TaskQueues use the operator's default NATS; a queue may name its own
(``spec.nats.url``). Connections are kept in the operator's memo (no module-level
state) and closed when the operator stops.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from celeriac.protocol import names

log = logging.getLogger(__name__)


class NatsConnections:
    """Opens and caches one NATS client per URL (a URL may be a comma-separated seed list)."""

    def __init__(self, default_url: str, credentials: Path | None = None) -> None:
        self.default_url = default_url
        self.credentials = credentials
        self._clients: dict[str, Client] = {}
        self._lock = asyncio.Lock()

    async def jetstream(self, url: str | None = None, wait: float = 5.0) -> JetStreamContext:
        """A JetStream context on ``url`` (default: the operator's NATS)."""
        target = url or self.default_url
        async with self._lock:
            client = self._clients.get(target)
            if client is None or client.is_closed:
                # Bounded: a server that is down must fail this reconcile, not hang it.
                client = await asyncio.wait_for(
                    nats.connect(
                        names.servers(target),
                        name="celeriac-operator",
                        user_credentials=str(self.credentials) if self.credentials else None,
                        connect_timeout=2,
                        max_reconnect_attempts=-1,
                        reconnect_time_wait=1,
                    ),
                    timeout=wait,
                )
                self._clients[target] = client
        return client.jetstream(timeout=wait)

    async def close(self) -> None:
        """Close every connection."""
        async with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            try:
                await client.close()
            except Exception as exc:  # closing must never fail the shutdown
                log.warning("closing a NATS connection failed: %s", exc)
