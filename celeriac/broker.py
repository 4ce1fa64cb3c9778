"""The connection to NATS JetStream through which tasks are published.

One ``Broker`` per event loop: it owns a NATS connection, declares queues on first
use, publishes task envelopes (now, or as JetStream message schedules when delayed),
and opens the results and revocation buckets.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import APIError

from celeriac.declaring import Declarer, QueueInfo
from celeriac.exceptions import CeleriacError, ScheduleNotSupported
from celeriac.pipelining import publish_pipelined
from celeriac.protocol import names
from celeriac.protocol.envelope import TaskMessage
from celeriac.pubacks import PubAcks
from celeriac.publishing import Publication, task_publication
from celeriac.results import ResultStore
from celeriac.revocation import RevocationStore
from celeriac.submitting import Delayed, due_time

# JetStream error codes for "message schedules is disabled" / "pattern is invalid".
_SCHEDULES_DISABLED = 10188
PUBLISH_TIMEOUT = 10.0


class BatchPublishError(CeleriacError):
    """Some messages of a batch were not acknowledged; the others were enqueued."""

    def __init__(self, failed: dict[str, BaseException]) -> None:
        self.failed = failed
        first = next(iter(failed.items()))
        super().__init__(
            f"{len(failed)} task(s) were not enqueued (e.g. {first[0]}: {first[1]!r}); "
            "resubmitting the same ids is safe, duplicates are dropped by the server"
        )


class Broker:
    """An open NATS connection with JetStream, the stores and the queue declarer."""

    def __init__(
        self,
        nc: Client,
        *,
        declare: bool,
        result_ttl: float,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.declarer = Declarer(self.js, declare=declare)
        self.pubacks = PubAcks(nc, PUBLISH_TIMEOUT)
        self.results = ResultStore(self.declarer, result_ttl, self.pubacks)
        self.revocations = RevocationStore(self.declarer)

    @classmethod
    async def connect(
        cls, url: str, *, declare: bool, result_ttl: float, credentials: str | None = None
    ) -> Broker:
        """Connect to ``url``; reconnects forever after the first connection succeeded."""
        try:
            nc = await nats.connect(
                url,
                name="celeriac",
                connect_timeout=5,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                user_credentials=credentials,
            )
        except Exception as exc:
            raise CeleriacError(f"cannot connect to NATS at {url}: {exc!r}") from exc
        return cls(nc, declare=declare, result_ttl=result_ttl)

    async def close(self) -> None:
        """Flush what is buffered and close the connection."""
        if not self.nc.is_closed:
            await self.nc.drain()
        await self.pubacks.close()  # fails what drain left without an acknowledgement

    async def ensure_queue(self, queue: str) -> QueueInfo:
        """Create the queue's streams and consumer if missing (when declaring); idempotent."""
        return await self.declarer.ensure_queue(queue)

    async def _prepare(self, item: Delayed) -> Publication:
        info = await self.ensure_queue(item.message.queue)
        return _publication(item, info)

    async def publish_task(
        self, message: TaskMessage, *, countdown: float | None = None, eta: datetime | None = None
    ) -> None:
        """Enqueue ``message`` (deduplicated by its id); delayed when countdown/eta is given."""
        pub = await self._prepare(Delayed(message, countdown, eta))
        try:
            # Cheaper than js.publish (no PubAck object, no timer per request); the
            # errors are the ones js.publish raises.
            await self.pubacks.publish(pub.subject, pub.payload, headers=pub.headers)
        except APIError as exc:
            raise _translate(exc) from exc

    async def publish_many(self, items: Sequence[Delayed]) -> None:
        """Enqueue many tasks, pipelining the publishes and awaiting the acks together.

        Raises ``BatchPublishError`` naming the ids that were not enqueued.
        """
        # Each distinct queue is resolved once (most batches have one), and every
        # publication is built before the first is sent, so bad input sends nothing.
        infos: dict[str, QueueInfo] = {}
        for item in items:
            queue = item.message.queue
            if queue not in infos:
                infos[queue] = await self.ensure_queue(queue)
        pubs = [_publication(item, infos[item.message.queue]) for item in items]
        errors = await publish_pipelined(self.nc, pubs, patience=PUBLISH_TIMEOUT)
        failed = {items[index].message.id: _translate(errors[index]) for index in sorted(errors)}
        if failed:
            raise BatchPublishError(failed)


def _publication(item: Delayed, info: QueueInfo) -> Publication:
    """The publish for ``item`` on its (declared) queue; refuses a delay it cannot hold."""
    pub = task_publication(item.message, due_time(item.countdown, item.eta))
    if pub.scheduled and not info.schedules:
        raise ScheduleNotSupported(
            f"countdown/eta need JetStream message schedules, but stream "
            f"{names.stream_name(info.name)} does not allow them (nats-server 2.12+ "
            "is required and the stream needs allow_msg_schedules)"
        )
    return pub


def _translate(exc: BaseException | None) -> BaseException:
    if isinstance(exc, APIError) and exc.err_code == _SCHEDULES_DISABLED:
        return ScheduleNotSupported(
            f"the stream refused a scheduled message ({exc.description}); countdown/eta need "
            "nats-server 2.12+ and a stream with allow_msg_schedules"
        )
    return exc if exc is not None else CeleriacError("unknown publish failure")
