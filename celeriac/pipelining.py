"""Publish a batch to JetStream and collect the acknowledgements through one inbox.

nats-py's ``publish_async`` makes a future, a random token, a semaphore wait and a
parsed ``PubAck`` per message, which costs more CPU than the publish itself. A batch
only needs to know which of its messages were not stored: every publish here names
``<inbox>.<index>`` as its reply subject, one subscription per batch receives all the
acknowledgements, and a counter says when the last one arrived. At most ``window``
messages wait for their acknowledgement at a time, like ``publish_async``'s limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from celeriac.pubacks import reply_error
from celeriac.publishing import Publication

# How many publishes may wait for their acknowledgement (publish_async's default).
WINDOW = 4000


class _Acks:
    """What the replies of one batch said, by index; wakes the publisher as they come."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.sent = 0
        self.errors: dict[int, BaseException] = {}
        self.answered: set[int] = set()
        self.progress = asyncio.Event()

    @property
    def waiting(self) -> int:
        return self.sent - len(self.answered)

    async def on_reply(self, msg: Msg) -> None:
        try:
            index = int(msg.subject[len(self.prefix) :])
        except ValueError:
            return  # not a reply to this batch
        if index in self.answered or not 0 <= index < self.sent:
            return
        self.answered.add(index)
        error = reply_error(msg)
        if error is not None:
            self.errors[index] = error
        self.progress.set()

    async def room(self, window: int, patience: float) -> bool:
        """Wait until fewer than ``window`` publishes wait; False after ``patience`` s silent."""
        loop = asyncio.get_running_loop()
        while self.waiting >= window:
            if not await self.wait(loop.time() + patience):
                return False
        return True

    async def wait(self, until: float) -> bool:
        """Wait for the next reply until the loop time ``until``; False when it passed."""
        self.progress.clear()
        remaining = until - asyncio.get_running_loop().time()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(self.progress.wait(), remaining)
        except TimeoutError:
            return False
        return True


async def publish_pipelined(
    nc: Client, pubs: Sequence[Publication], *, patience: float, window: int = WINDOW
) -> dict[int, BaseException]:
    """Publish ``pubs`` in order; the errors of those not stored, by index (empty: all stored).

    ``patience`` (seconds) bounds every wait for room in the window, and the final wait
    (plus 1 ms per message still waiting); a message unacknowledged, or not sent, when
    it runs out fails with ``TimeoutError``. Errors of
    the connection itself (closed, buffer full while reconnecting) are raised.
    """
    if not pubs:
        return {}
    acks = _Acks(nc.new_inbox() + ".")
    sub = await nc.subscribe(acks.prefix + "*", cb=acks.on_reply)
    try:
        publish = nc.publish
        for index, pub in enumerate(pubs):
            if not await acks.room(window, patience):
                break  # nothing acknowledged for a whole timeout: stop sending
            acks.sent = index + 1
            await publish(pub.subject, pub.payload, acks.prefix + str(index), pub.headers)
        deadline = asyncio.get_running_loop().time() + patience + acks.waiting / 1000
        while acks.waiting and await acks.wait(deadline):
            pass
    finally:
        await _unsubscribe(sub)
    failed = dict(acks.errors)
    for index in range(len(pubs)):
        if index not in acks.answered:
            failed[index] = TimeoutError("no acknowledgement from JetStream")
    return failed


async def _unsubscribe(sub: Subscription) -> None:
    try:
        await sub.unsubscribe()
    except Exception:  # a closed connection has nothing left to drop
        return
