"""JetStream publishes whose acknowledgements share one reply subscription.

nats-py's ``js.publish`` is a request per message: a token drawn from the system's
random source, a future, an ``asyncio.wait_for`` timer and a parsed ``PubAck``
object. The worker publishes a result for every task, and on that path the
bookkeeping costs more CPU than the publish. Here every reply lands on one
wildcard inbox and is matched by a counter; a single sweeper fails the publishes
whose acknowledgement is overdue.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, NoStreamResponseError

_NO_RESPONDERS = "503"


class PubAcks:
    """Publish to JetStream and wait for the stream's acknowledgement, cheaply."""

    def __init__(self, nc: Client, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout
        self._prefix = ""
        self._sub: Subscription | None = None
        self._counter = itertools.count()
        # token -> (future, deadline on the loop's clock)
        self._waiting: dict[str, tuple[asyncio.Future[None], float]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Publish and return once a stream stored the message.

        Raises ``nats.errors.TimeoutError`` without an acknowledgement in time,
        ``NoStreamResponseError`` when no stream captures ``subject``, and
        ``nats.js.errors.APIError`` when the stream refused the message.
        """
        if self._sub is None:
            await self._subscribe()
        loop = asyncio.get_running_loop()
        token = str(next(self._counter))
        future: asyncio.Future[None] = loop.create_future()
        self._waiting[token] = (future, loop.time() + self._timeout)
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            if self._sweeper is None or self._sweeper.done():
                self._sweeper = asyncio.create_task(self._sweep(), name="celeriac-puback-sweeper")
            await future
        finally:
            del self._waiting[token]

    async def _subscribe(self) -> None:
        async with self._starting:
            if self._sub is None:
                prefix = self._nc.new_inbox() + "."
                self._sub = await self._nc.subscribe(prefix + "*", cb=self._on_reply)
                self._prefix = prefix

    async def _on_reply(self, msg: Msg) -> None:
        entry = self._waiting.get(msg.subject[len(self._prefix) :])
        if entry is None or entry[0].done():
            return  # the publisher gave up (timeout, cancelled) before the reply came
        error = reply_error(msg)
        if error is None:
            entry[0].set_result(None)
        else:
            entry[0].set_exception(error)

    async def _sweep(self) -> None:
        """Fail overdue publishes; ends when nothing waits (the next publish restarts it)."""
        loop = asyncio.get_running_loop()
        tick = min(0.5, self._timeout / 2)
        while self._waiting:
            await asyncio.sleep(tick)
            now = loop.time()
            for future, deadline in list(self._waiting.values()):
                if deadline <= now and not future.done():
                    future.set_exception(NatsTimeoutError())

    async def close(self) -> None:
        """Stop the sweeper, fail the publishes still waiting, drop the reply subscription."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        # Nothing reads their replies or times them out any more: fail them now.
        for future, _ in self._waiting.values():
            if not future.done():
                future.set_exception(NatsTimeoutError())
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):  # a closed connection has nothing to drop
                await sub.unsubscribe()


def reply_error(msg: Msg) -> BaseException | None:
    """The error a JetStream publish reply carries (those ``js.publish`` raises), or None."""
    status = msg.headers.get("Status") if msg.headers else None
    if status == _NO_RESPONDERS:
        return NoStreamResponseError()
    if status is not None:
        description = msg.headers.get("Description", "") if msg.headers else ""
        return APIError(code=int(status), description=description)
    if b'"error":' not in msg.data:
        return None  # an acknowledgement (a stream named "error" is checked below)
    return _body_error(msg.data)


def _body_error(data: bytes) -> BaseException | None:
    try:
        reply = json.loads(data)
    except ValueError as exc:
        return APIError(description=f"unreadable acknowledgement: {exc}")
    if not isinstance(reply, dict) or "error" not in reply:
        return None
    try:
        APIError.from_error(reply["error"])  # raises the matching subclass
    except APIError as exc:
        return exc
    return APIError(description=str(reply["error"]))
