"""The connection to NATS JetStream through which tasks are published.

One ``Broker`` per event loop: it owns a NATS connection, declares queues on first
use, publishes task envelopes (now, or as JetStream message schedules when delayed),
and opens the results and revocation buckets. The first connect gives up after
``connect_timeout``; once connected, the connection reconnects for as long as it
takes, and a ``Connection`` follows its state. A failed publish says which task ids
may have been stored and which were refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError

from celeriac import tracing
from celeriac.connection import Connection, abandon, close_disconnected, describe
from celeriac.declaring import Declarer, QueueInfo
from celeriac.exceptions import (
    BatchPublishError,
    CeleriacError,
    NatsRefusedError,
    PublishError,
    ScheduleNotSupported,
)
from celeriac.natsauth import NO_AUTH, NatsAuth
from celeriac.pipelining import publish_pipelined
from celeriac.protocol import names
from celeriac.protocol.envelope import TaskMessage
from celeriac.protocol.signing import SigningKeys
from celeriac.pubacks import PubAcks
from celeriac.publishing import Publication, task_publication
from celeriac.results import ResultStore
from celeriac.revocation import RevocationStore
from celeriac.submitting import Delayed, due_time

# JetStream error codes for "message schedules is disabled" / "pattern is invalid".
_SCHEDULES_DISABLED = 10188
PUBLISH_TIMEOUT = 10.0
# How long publishes that no stream answered (a queue's stream between leaders, on a
# cluster) are sent again before failing; an election takes a few seconds.
LEADERLESS_PATIENCE = 10.0
# Seconds the first connect may take; a web request should fail, not hang, without NATS.
DEFAULT_CONNECT_TIMEOUT = 5.0
_WINDOW = "within the stream's duplicate window (2 minutes by default)"
_RESUBMIT = (
    f"Sending it again with the same task_id is safe: JetStream drops a repeated id {_WINDOW}."
)
_RESUBMIT_MANY = (
    f"Sending them again with the same task ids is safe: JetStream drops a repeated id {_WINDOW}."
)


class Broker:
    """An open NATS connection with JetStream, the stores and the queue declarer."""

    def __init__(
        self,
        nc: Client,
        *,
        declare: bool,
        result_ttl: float,
        connection: Connection,
        signing_keys: SigningKeys | None = None,
    ) -> None:
        self.nc = nc
        # Sign every task published (None: unsigned, at no cost); see protocol.signing.
        self.signing_keys = signing_keys
        self.connection = connection  # fed by nc's callbacks (see ``connect``)
        self.js: JetStreamContext = nc.jetstream()
        self.declarer = Declarer(self.js, declare=declare)
        self.pubacks = PubAcks(nc, PUBLISH_TIMEOUT)
        self.results = ResultStore(self.declarer, result_ttl, self.pubacks)
        self.revocations = RevocationStore(self.declarer)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        declare: bool,
        result_ttl: float,
        auth: NatsAuth = NO_AUTH,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        signing_keys: SigningKeys | None = None,
    ) -> Broker:
        """Connect to ``url`` within ``connect_timeout`` seconds, else raise ``CeleriacError``.

        ``url`` may be a comma-separated seed list (the nodes of a cluster): the client
        connects to any of them and fails over between them. Once connected, the
        connection reconnects for as long as an outage lasts.
        """
        connection = Connection(url)
        nc = Client()
        options = auth.connect_options()
        try:
            # nats-py retries a first connect forever when reconnects are unlimited.
            async with asyncio.timeout(connect_timeout):
                await nc.connect(
                    names.servers(url),
                    name="celeriac",
                    connect_timeout=5,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,  # type: ignore[arg-type]  # float works
                    error_cb=connection.error_cb,
                    disconnected_cb=connection.disconnected_cb,
                    reconnected_cb=connection.reconnected_cb,
                    closed_cb=connection.closed_cb,
                    **options,
                )
        except TimeoutError:
            await abandon(nc, connection)
            last = f"; last error: {connection.last_error!r}" if connection.last_error else ""
            raise CeleriacError(
                f"cannot connect to NATS at {connection.url}: tried for "
                f"{connect_timeout:g} s{last} (connect_timeout / CELERIAC_CONNECT_TIMEOUT)"
            ) from None
        except NatsRefusedError:
            await abandon(nc, connection)
            raise
        except Exception as exc:
            await abandon(nc, connection)
            raise CeleriacError(f"cannot connect to NATS at {connection.url}: {exc!r}") from exc
        except asyncio.CancelledError:
            await abandon(nc, connection)
            raise
        connection.opened()
        return cls(
            nc,
            declare=declare,
            result_ttl=result_ttl,
            connection=connection,
            signing_keys=signing_keys,
        )

    async def close(self) -> None:
        """Flush what is buffered and close the connection."""
        self.connection.closing = True
        if self.nc.is_connected:
            await self.nc.drain()
        elif not self.nc.is_closed:
            await close_disconnected(self.nc)
        await self.pubacks.close()  # fails what drain left without an acknowledgement

    async def ensure_queue(self, queue: str) -> QueueInfo:
        """Create the queue's streams and consumer if missing (when declaring); idempotent."""
        return await self.declarer.ensure_queue(queue)

    async def _queue_info(self, queue: str, ids: Sequence[str]) -> QueueInfo:
        """``ensure_queue``, failing with a ``PublishError`` when NATS does not answer."""
        try:
            return await self.ensure_queue(queue)
        except (NatsError, TimeoutError) as exc:
            kind = PublishError if len(ids) == 1 else BatchPublishError
            raise kind(
                f"{_count(len(ids))} not enqueued: cannot look up queue {queue!r} on NATS at "
                f"{self.connection.url} ({describe(exc)}); nothing was sent, submit again later",
                dict.fromkeys(ids, exc),
            ) from exc

    async def publish_task(
        self, message: TaskMessage, *, countdown: float | None = None, eta: datetime | None = None
    ) -> None:
        """Enqueue ``message`` (deduplicated by its id); delayed when countdown/eta is given.

        Raises nats-py's errors (``TimeoutError`` without an acknowledgement), which the
        worker tells apart to retry, and ``ScheduleNotSupported`` for a refused delay.
        Callers of the SDK go through ``submit_task``.
        """
        info = await self.ensure_queue(message.queue)
        await self._send(Delayed(message, countdown, eta), info)

    async def submit_task(self, item: Delayed) -> None:
        """``publish_task`` for a caller of the SDK: NATS failures raise ``PublishError``."""
        message = item.message
        info = await self._queue_info(message.queue, [message.id])
        try:
            await self._send(item, info)
        except (NatsError, TimeoutError) as exc:
            raise self._publish_error({message.id: exc}, total=1) from exc

    async def _send(self, item: Delayed, info: QueueInfo) -> None:
        pub = _publication(item, info, self.signing_keys)
        with tracing.sending(item.message, pub):
            await self._publish(pub)

    async def _publish(self, pub: Publication) -> None:
        waits = _leaderless_waits()
        while True:
            try:
                # Cheaper than js.publish (no PubAck object, no timer per request); the
                # errors are the ones js.publish raises.
                await self.pubacks.publish(pub.subject, pub.payload, headers=pub.headers)
                return
            except APIError as exc:
                raise _translate(exc) from exc
            except NoStreamResponseError:
                # Nothing stored: the queue exists, so its stream is between leaders.
                delay = next(waits, None)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def publish_many(self, items: Sequence[Delayed]) -> None:
        """Enqueue many tasks, pipelining the publishes and awaiting the acks together.

        Raises ``BatchPublishError`` naming the ids not confirmed as enqueued.
        """
        # Each distinct queue is resolved once (most batches have one), and every
        # publication is built before the first is sent, so bad input sends nothing.
        ids = [item.message.id for item in items]
        infos: dict[str, QueueInfo] = {}
        for item in items:
            queue = item.message.queue
            if queue not in infos:
                infos[queue] = await self._queue_info(queue, ids)
        keys = self.signing_keys
        pubs = [_publication(item, infos[item.message.queue], keys) for item in items]
        with tracing.sending_many(items, pubs) as report:
            try:
                errors = await self._publish_pipelined(pubs)
            except NatsError as exc:  # the connection failed midway: any of them may be stored
                raise self._publish_error(dict.fromkeys(ids, exc), total=len(ids)) from exc
            report(errors)
        failed = {items[index].message.id: errors[index] for index in sorted(errors)}
        if failed:
            raise self._publish_error(failed, total=len(items))

    async def _publish_pipelined(self, pubs: Sequence[Publication]) -> dict[int, BaseException]:
        """``publish_pipelined``, sending again for a while those no stream answered."""
        errors = await publish_pipelined(self.nc, pubs, patience=PUBLISH_TIMEOUT)
        for delay in _leaderless_waits():
            leaderless = [i for i, e in errors.items() if isinstance(e, NoStreamResponseError)]
            if not leaderless:
                break
            await asyncio.sleep(delay)
            again = await publish_pipelined(
                self.nc, [pubs[i] for i in leaderless], patience=PUBLISH_TIMEOUT
            )
            for position, index in enumerate(leaderless):
                if position in again:
                    errors[index] = again[position]
                else:
                    del errors[index]
        return errors

    def _publish_error(self, errors: Mapping[str, BaseException], *, total: int) -> PublishError:
        """The error for tasks not confirmed as enqueued, saying whether they may be stored.

        ``errors`` maps task ids to their causes; ``total`` is how many were submitted.
        """
        causes = {task_id: _translate(exc) for task_id, exc in errors.items()}
        maybe = {i: e for i, e in causes.items() if not _refused(e)}
        refused = {i: e for i, e in causes.items() if _refused(e)}
        down = "" if self.connection.connected else f" (NATS at {self.connection.url} is down)"
        if total == 1:
            ((task_id, cause),) = causes.items()
            if refused:
                return PublishError(
                    f"task {task_id} was not enqueued: JetStream refused it ({_why(cause)})", causes
                )
            return PublishError(
                f"task {task_id} may not have been enqueued: {_why(cause)}{down}; it may "
                f"still have been stored. {_RESUBMIT}",
                causes,
            )
        parts = []
        if maybe:
            task_id, cause = next(iter(maybe.items()))
            parts.append(
                f"{_count(len(maybe))} may or may not have been stored "
                f"(e.g. {task_id}: {_why(cause)}){down}"
            )
        if refused:
            task_id, cause = next(iter(refused.items()))
            parts.append(
                f"{_count(len(refused))} refused, not stored (e.g. {task_id}: {_why(cause)})"
            )
        advice = f" {_RESUBMIT_MANY}" if maybe else ""
        return BatchPublishError(
            f"{len(causes)} of {total} task(s) not confirmed as enqueued: "
            f"{'; '.join(parts)}.{advice}",
            causes,
        )


def _publication(item: Delayed, info: QueueInfo, keys: SigningKeys | None) -> Publication:
    """The publish for ``item`` on its (declared) queue; refuses a delay it cannot hold."""
    pub = task_publication(item.message, due_time(item.countdown, item.eta), keys)
    if pub.scheduled and not info.schedules:
        raise ScheduleNotSupported(
            f"countdown/eta need JetStream message schedules, but stream "
            f"{names.stream_name(info.name)} does not allow them (nats-server 2.12+ "
            "is required and the stream needs allow_msg_schedules)"
        )
    return pub


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, APIError) and exc.err_code == _SCHEDULES_DISABLED:
        return ScheduleNotSupported(
            f"the stream refused a scheduled message ({exc.description}); countdown/eta need "
            "nats-server 2.12+ and a stream with allow_msg_schedules"
        )
    return exc


def _leaderless_waits() -> Iterator[float]:
    """Pauses before sending again what no stream answered: 0.1 s doubling to 1 s,
    ``LEADERLESS_PATIENCE`` seconds in all."""
    delay, waited = 0.1, 0.0
    while waited < LEADERLESS_PATIENCE:
        yield delay
        waited += delay
        delay = min(1.0, delay * 2)


def _refused(exc: BaseException) -> bool:
    """True when the server answered no: the message was not stored."""
    return isinstance(exc, (APIError, NoStreamResponseError, CeleriacError))


def _why(exc: BaseException) -> str:
    """Why a publish failed, in words."""
    if isinstance(exc, TimeoutError):
        return f"no acknowledgement from JetStream within {PUBLISH_TIMEOUT:g} s"
    if isinstance(exc, NoStreamResponseError):
        return (
            f"no stream answered for {LEADERLESS_PATIENCE:g} s (the queue's stream was "
            "deleted, or has had no leader that long)"
        )
    return describe(exc)


def _count(n: int) -> str:
    return "1 task" if n == 1 else f"{n} tasks"
