"""A connection to the in-memory server, standing where nats-py's ``Client`` stands.

``MemoryConnector(server)`` is what ``Client.use_connector`` takes: it hands the SDK
a real ``celeriac.broker.Broker`` built on a ``MemoryClient`` instead of a NATS
connection, so publishing, acknowledgements, result storage and revocation run the
SDK's own code. Queues are always declared, as the operator would have created them.
"""

from __future__ import annotations

from typing import Any, cast

from nats.aio.client import Client
from nats.errors import ConnectionClosedError, MaxPayloadError

from celeriac.broker import Broker
from celeriac.connection import Connection
from celeriac.protocol.signing import SigningKeys
from celeriac.testing.jetstream import MemoryJetStream
from celeriac.testing.server import Callback, MemoryNats

MEMORY_URL = "memory://"


class MemorySubscription:
    """A subscription of a ``MemoryClient``."""

    def __init__(self, client: MemoryClient, sid: int) -> None:
        self._client = client
        self.sid = sid

    async def unsubscribe(self, limit: int = 0) -> None:
        """Stop receiving messages."""
        self._client.drop(self.sid)


class MemoryClient:
    """A connection to ``server``: publish, subscribe, JetStream; never disconnected."""

    def __init__(self, server: MemoryNats) -> None:
        self.server = server
        self._closed = False
        self._sids: set[int] = set()
        self.stats: dict[str, int] = {"reconnects": 0, "in_msgs": 0, "out_msgs": 0}

    @property
    def max_payload(self) -> int:
        """The largest message the server takes."""
        return self.server.max_payload

    @property
    def is_connected(self) -> bool:
        """True until closed."""
        return not self._closed

    @property
    def is_closed(self) -> bool:
        """True once closed."""
        return self._closed

    @property
    def is_reconnecting(self) -> bool:
        """Never: nothing stands between it and the server."""
        return False

    def jetstream(self, **_: Any) -> MemoryJetStream:
        """The JetStream context."""
        return MemoryJetStream(self.server)

    def new_inbox(self) -> str:
        """A fresh reply subject."""
        return self.server.new_inbox()

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        reply: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Publish; a message for a queue may run at once in eager mode."""
        if self._closed:
            raise ConnectionClosedError()
        if len(payload) > self.server.max_payload:
            raise MaxPayloadError()
        self.stats["out_msgs"] += 1
        stored = self.server.publish(subject, payload, dict(headers or {}), reply)
        await self.server.enqueued(stored)

    async def subscribe(
        self, subject: str, queue: str = "", cb: Callback | None = None, **_: Any
    ) -> MemorySubscription:
        """Call ``cb`` for every message on ``subject`` (wildcards allowed)."""
        if self._closed:
            raise ConnectionClosedError()
        if cb is None:
            raise ValueError("the in-memory NATS delivers to callbacks only: pass cb=")
        sid = self.server.subscribe(subject, cb)
        self._sids.add(sid)
        return MemorySubscription(self, sid)

    def drop(self, sid: int) -> None:
        """End subscription ``sid``."""
        self._sids.discard(sid)
        self.server.unsubscribe(sid)

    async def flush(self, timeout: float = 10) -> None:  # noqa: ASYNC109 - nats-py's signature
        """Nothing is buffered."""

    async def drain(self) -> None:
        """End the subscriptions and close."""
        await self.close()

    async def close(self) -> None:
        """End the subscriptions; later calls fail as on a closed connection."""
        for sid in list(self._sids):
            self.drop(sid)
        self._closed = True


class MemoryConnector:
    """What ``Client.use_connector`` takes: brokers on ``server`` instead of NATS.

    ``worker`` is the memory worker a test drives for that server, when there is one.
    """

    def __init__(self, server: MemoryNats, worker: Any = None) -> None:
        self.server = server
        self.worker = worker

    async def __call__(
        self,
        url: str,
        *,
        result_ttl: float,
        signing_keys: SigningKeys | None = None,
        **_: Any,
    ) -> Broker:
        """A broker on the server, with the app's result TTL and signing keys."""
        connection = Connection(MEMORY_URL)
        connection.opened()
        return Broker(
            cast(Client, MemoryClient(self.server)),
            declare=True,
            result_ttl=result_ttl,
            connection=connection,
            signing_keys=signing_keys,
        )
