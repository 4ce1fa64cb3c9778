"""Completion webhooks, the delivering half: consume the jobs, POST them, signed.

Every ``celeriac webhooks`` process pulls from the one durable consumer of the
``CELERIAC_WEBHOOKS`` stream, so several share the work and a crash loses nothing
(an unacknowledged job comes back after the consumer's ack wait). Each attempt is
one POST with a timeout; what follows it is ``webhookretries.decide``: ack when
delivered, NAK with a delay to try again (JetStream keeps the job meanwhile), or
dead-letter the job to its queue's dead-letter stream (reason ``webhook_failed``),
where ``celeriac dlq`` lists it and ``celeriac dlq replay`` sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from celeriac import __version__
from celeriac.broker import Broker
from celeriac.protocol.envelope import DeadLetter, DeadLetterReason
from celeriac.protocol.webhooks import (
    WEBHOOKS_CONSUMER,
    WEBHOOKS_STREAM,
    WebhookJob,
    signature_header,
)
from celeriac.worker_runtime.deadletters import HEADROOM, fit, publish_dead_letter
from celeriac.worker_runtime.destinations import (
    AddressRules,
    CheckingResolver,
    RefusedDestinationError,
    literal_refusal,
)
from celeriac.worker_runtime.persisting import persist
from celeriac.worker_runtime.webhookjobs import stream_config
from celeriac.worker_runtime.webhookmetrics import DispatcherMetrics, Outcome
from celeriac.worker_runtime.webhookretries import (
    Attempt,
    Delivered,
    RetryPolicy,
    Stop,
    TryAgain,
    decide,
    parse_retry_after,
)
from celeriac.worker_runtime.webhooksecrets import Secrets

log = logging.getLogger(__name__)

# How long one fetch waits for jobs before checking whether to stop.
_FETCH_WAIT = 1.0
# Past the POST timeout, how long a job may stay unacknowledged before JetStream
# hands it to another dispatcher (this one crashed).
_ACK_MARGIN = 30.0


@dataclass(frozen=True)
class Answer:
    """What one POST got: a status, or why there was none."""

    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    refused: str | None = None  # the destination is not allowed: no attempt was made


@dataclass
class Dispatcher:
    """Delivers webhook jobs until told to stop."""

    broker: Broker
    secrets: Secrets
    rules: AddressRules
    policy: RetryPolicy
    name: str
    timeout: float = 10.0
    concurrency: int = 16
    rng: random.Random = field(default_factory=random.Random)
    metrics: DispatcherMetrics = field(default_factory=DispatcherMetrics)
    # True while bound to the consumer and fetching (readiness).
    consuming: bool = False

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume and deliver until ``stopping`` is set; then finish the POSTs under way."""
        await self._declare()
        sub = await self.broker.js.pull_subscribe_bind(WEBHOOKS_CONSUMER, WEBHOOKS_STREAM)
        log.info("delivering webhooks (%d at once)", self.concurrency)
        running: set[asyncio.Task[None]] = set()
        self.metrics.count_in_flight(lambda: len(running))
        connector = aiohttp.TCPConnector(resolver=CheckingResolver(self.rules))
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            self.consuming = True
            while not stopping.is_set():
                free = self.concurrency - len(running)
                if free <= 0:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    msgs = await sub.fetch(free, timeout=_FETCH_WAIT)
                except TimeoutError:
                    continue
                except NatsError as exc:
                    log.warning("fetching webhook jobs failed (%r); trying again", exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), _FETCH_WAIT)
                    continue
                for msg in msgs:
                    task = asyncio.create_task(self._handle(session, msg))
                    running.add(task)
                    task.add_done_callback(running.discard)
            self.consuming = False
            if running:
                await asyncio.wait(running, timeout=self.timeout + 1)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    async def _declare(self) -> None:
        js = self.broker.js
        try:
            await js.stream_info(WEBHOOKS_STREAM)
        except NotFoundError:
            await js.add_stream(**stream_config())
        try:
            await js.consumer_info(WEBHOOKS_STREAM, WEBHOOKS_CONSUMER)
        except NotFoundError:
            config = ConsumerConfig(
                durable_name=WEBHOOKS_CONSUMER,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self.timeout + _ACK_MARGIN,
                max_deliver=-1,  # the policy counts attempts and dead-letters
                max_ack_pending=10_000,
            )
            await js.add_consumer(WEBHOOKS_STREAM, config)

    async def _handle(self, session: aiohttp.ClientSession, msg: Msg) -> None:
        try:
            await self._deliver(session, msg)
        except Exception:
            # The job stays unacknowledged: JetStream hands it out again after ack_wait.
            log.exception("handling a webhook job failed; it returns after the ack wait")

    async def _deliver(self, session: aiohttp.ClientSession, msg: Msg) -> None:
        attempt = int(msg.metadata.num_delivered)
        try:
            job = WebhookJob.model_validate_json(msg.data or b"")
        except ValidationError as exc:
            log.error("dropping a malformed webhook job: %s", exc.errors()[0]["msg"])
            await msg.term()
            return
        keys = self.secrets.get(job.target.secret)
        if not keys:
            why = f"no secret named {job.target.secret!r} in the webhook secrets file"
            await self._give_up(msg, job, attempt, why)
            self.metrics.count(Outcome.DEAD_LETTERED, None)
            return
        started = time.monotonic()
        answer = await self._post(session, job, keys)
        if answer.refused is None:  # a refused destination got no POST to time
            self.metrics.observe_attempt(time.monotonic() - started)
        if answer.refused is not None:
            await self._give_up(msg, job, attempt, f"refused destination: {answer.refused}")
            self.metrics.count(Outcome.REFUSED, None)
            return
        tried = Attempt(attempt, answer.status, answer.error, answer.retry_after)
        decision = decide(tried, self.policy, self.rng)
        if isinstance(decision, Delivered):
            log.info("delivered webhook %s (%s) to %s", job.id, answer.status, _origin(job))
            await msg.ack()
            self.metrics.count(Outcome.DELIVERED, answer.status)
        elif isinstance(decision, TryAgain):
            log.warning("webhook %s attempt %d: %s; trying again in %.2fs", job.id, attempt,
                        answer.error or answer.status, decision.delay)  # fmt: skip
            await msg.nak(delay=decision.delay)
            self.metrics.count(Outcome.RETRIED, answer.status)
        else:
            assert isinstance(decision, Stop)
            await self._give_up(msg, job, attempt, decision.why)
            self.metrics.count(Outcome.DEAD_LETTERED, answer.status)

    async def _post(
        self, session: aiohttp.ClientSession, job: WebhookJob, keys: tuple[bytes, ...]
    ) -> Answer:
        url = job.target.url
        refused = literal_refusal(urlsplit(url).hostname or "", self.rules)
        if refused is not None:  # an IP address in the URL: nothing to resolve
            return Answer(refused=refused)
        body = job.body.encode()
        stamp = int(time.time())
        headers = {
            "webhook-id": job.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature_header(keys, job.id, stamp, body),
            "content-type": "application/json",
            "user-agent": f"celeriac-webhooks/{__version__}",
        }
        try:
            async with session.post(url, data=body, headers=headers,
                                    allow_redirects=False) as resp:  # fmt: skip
                after = parse_retry_after(resp.headers.get("Retry-After"), datetime.now(UTC))
                return Answer(status=resp.status, retry_after=after)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedDestinationError):
                return Answer(refused=str(exc.os_error))
            return Answer(error=f"cannot connect to {_origin(job)} ({exc.os_error})")
        except TimeoutError:
            return Answer(error=f"no answer within {self.timeout:g}s")
        except aiohttp.ClientError as exc:
            return Answer(error=f"{type(exc).__name__}: {exc}")

    async def _give_up(self, msg: Msg, job: WebhookJob, attempt: int, why: str) -> None:
        """Dead-letter the job (acknowledged by JetStream), then drop it from the stream."""
        log.error("webhook %s to %s not delivered: %s", job.id, _origin(job), why)
        letter = DeadLetter(
            reason=DeadLetterReason.WEBHOOK_FAILED,
            error=f"webhook to {_origin(job)} not delivered: {why}",
            task_id=job.task_id,
            task=job.task,
            queue=job.queue,
            deliveries=attempt,
            stream_sequence=int(msg.metadata.sequence.stream),
            worker=self.name,
            failed_at=datetime.now(UTC),
            original="",
            original_headers={"webhook-id": job.id, "Celeriac-Webhook-Event": job.event.value},
        )
        letter = fit(letter, msg.data or b"", self.broker.nc.max_payload - HEADROOM)
        await persist(lambda: publish_dead_letter(self.broker, letter), "webhook dead letter")
        await msg.ack()


def _origin(job: WebhookJob) -> str:
    """The URL without its path and query (which may carry tokens) for log lines."""
    parts = urlsplit(job.target.url)
    return f"{parts.scheme}://{parts.netloc}"
