"""What the worker does with one message, from decoding to the final ack.

Order matters for at-least-once delivery: the result is stored and the canvas
continued before the ack; a dead letter is published (and acknowledged by
JetStream) before the original is terminated, so a crash at any point leaves the
message to be redelivered rather than lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nats.errors import NoRespondersError
from nats.js.errors import NoStreamResponseError

from celeriac.protocol.envelope import DeadLetter, DeadLetterReason, ResultRecord, TaskMessage
from celeriac.protocol.states import TaskState
from celeriac.task import Request
from celeriac.worker_runtime.backoff import GiveUp, RetryPolicy, plan_retry
from celeriac.worker_runtime.continuation import Continuation
from celeriac.worker_runtime.deadletters import publish_dead_letter
from celeriac.worker_runtime.decoding import Rejection, decode_task
from celeriac.worker_runtime.delivery import Delivery
from celeriac.worker_runtime.execution import Call, ErrorInfo, Outcome, Pool
from celeriac.worker_runtime.logs import current_task_id
from celeriac.worker_runtime.metrics import WorkerMetrics
from celeriac.worker_runtime.records import success_document
from celeriac.worker_runtime.revoked import RevokedMirror

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.broker import Broker
    from celeriac.task import Task

log = logging.getLogger(__name__)

# When a dead letter cannot be published, try the whole message again this much later.
_DEAD_LETTER_RETRY_DELAY = 5.0
# When the result store or canvas fails after the task ran, redeliver this much later.
_SETTLE_RETRY_DELAY = 2.0
# Waits between attempts to store a result or dead letter while NATS is away.
_PERSIST_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
# A task still running this long after it began gets a STARTED record; a shorter one
# goes straight to its final state, which spares the many short tasks a write each.
STARTED_AFTER = 0.05


class DeadLetterError(Exception):
    """The dead-letter stream did not acknowledge the letter; the original is kept."""


@dataclass
class Handler:
    """Handles messages for one worker; shared by all its queues."""

    app: Celeriac
    broker: Broker
    pool: Pool
    metrics: WorkerMetrics
    worker_name: str
    revoked: RevokedMirror
    rng: random.Random = field(default_factory=random.Random)
    continuation: Continuation = field(init=False)

    def __post_init__(self) -> None:
        self.continuation = Continuation(self.broker)

    async def handle(self, delivery: Delivery, ran: Callable[[Outcome], None]) -> None:
        """Process one delivery; never raises except when cancelled.

        ``ran`` is called as soon as the attempt has returned, before its result is
        stored and the message acked: the execution slot can take the next message
        meanwhile (the outcome's ``still_running`` says when it is really free).

        Runs as an asyncio task of its own: the task id set for log lines lives in
        that task's context and ends with it.
        """
        decoded = decode_task(delivery.msg.data)
        if isinstance(decoded, Rejection):
            current_task_id.set(decoded.task_id or "-")
            await self._guarded(delivery, self._reject(delivery, decoded))
            return
        current_task_id.set(decoded.id)
        await self._guarded(delivery, self._process(delivery, decoded, ran))

    async def _guarded(self, delivery: Delivery, work: Any) -> Any:
        try:
            return await work
        except DeadLetterError as exc:
            log.error("%s; redelivering in %gs", exc, _DEAD_LETTER_RETRY_DELAY)
            await _nak_or_log(delivery, _DEAD_LETTER_RETRY_DELAY)
        except Exception:
            log.exception("handling failed; redelivering in %gs", _SETTLE_RETRY_DELAY)
            await _nak_or_log(delivery, _SETTLE_RETRY_DELAY)
        return None

    async def _reject(self, delivery: Delivery, rejection: Rejection) -> None:
        log.error("dead-lettering a %s message: %s", rejection.reason.value, rejection.error)
        self.metrics.of(delivery.queue, rejection.task or "-").received.inc()
        await self._dead_letter(delivery, rejection.reason, rejection.error, None, rejection)
        await delivery.term()

    async def _process(
        self, delivery: Delivery, message: TaskMessage, ran: Callable[[Outcome], None]
    ) -> None:
        metrics = self.metrics.of(delivery.queue, message.task)
        metrics.received.inc()
        task = self.app.tasks.get(message.task)
        if task is None:
            await self._unknown_task(delivery, message)
            return
        if await self._skipped(delivery, message):
            return
        retries = message.retries + delivery.deliveries - 1
        quiet = task.ignore_result or message.ignore_result
        log.info("running %s (attempt %d)", message.task, retries + 1)
        call = self._call(task, message, delivery, retries)
        if quiet:
            outcome = await self.pool.run(task, call)
        else:
            outcome = await self._run_tracked(task, call, message, retries)
        ran(outcome)
        metrics.duration.observe(outcome.duration)
        await self._settle(delivery, message, task, outcome, retries=retries, quiet=quiet)

    async def _settle(
        self,
        delivery: Delivery,
        message: TaskMessage,
        task: Task,
        outcome: Outcome,
        *,
        retries: int,
        quiet: bool,
    ) -> None:
        """Store the outcome, continue the canvas, settle the message."""
        document: bytes | None = None
        # The value is stored, or handed to the next step: either way it must be JSON.
        passed_on = bool(message.chain) or message.chord is not None
        if outcome.error is None and (not quiet or passed_on):
            serialized = self._success_document(message, outcome, retries)
            if isinstance(serialized, ErrorInfo):
                # The same code would return the same value: retrying is useless.
                outcome.error = serialized
                await self._failed(delivery, message, task, serialized,
                                   retries=retries, quiet=quiet, final=True)  # fmt: skip
                return
            document = None if quiet else serialized
        if outcome.error is None:
            await self._succeeded(delivery, message, outcome, document)
        else:
            await self._failed(delivery, message, task, outcome.error,
                               retries=retries, quiet=quiet, final=False)  # fmt: skip

    async def _run_tracked(
        self, task: Task, call: Call, message: TaskMessage, retries: int
    ) -> Outcome:
        """Run the attempt; record STARTED if it is still running after ``STARTED_AFTER``.

        The STARTED write is awaited before the final state, so it never overwrites it.
        """
        started: list[asyncio.Future[None]] = []

        def write_started() -> None:
            record = ResultRecord(state=TaskState.STARTED, retries=retries)
            started.append(asyncio.ensure_future(self._store(message, record)))

        timer = asyncio.get_running_loop().call_later(STARTED_AFTER, write_started)
        try:
            return await self.pool.run(task, call)
        finally:
            timer.cancel()
            if started:
                await started[0]

    def _success_document(
        self, message: TaskMessage, outcome: Outcome, retries: int
    ) -> bytes | ErrorInfo:
        """The SUCCESS record's bytes, or the error when the value is not plain JSON."""
        try:
            return success_document(
                message.task, outcome.value, retries=retries, worker=self.worker_name
            )
        except (TypeError, ValueError) as exc:
            kind = type(outcome.value).__name__
            problem = f"the task's result ({kind}) is not JSON-serializable: {exc}"
            return ErrorInfo("TypeError", problem)

    def _call(self, task: Task, message: TaskMessage, delivery: Delivery, retries: int) -> Call:
        request = None
        if task.bind:  # only bound tasks see their request
            info = {
                "queue": delivery.queue,
                "deliveries": delivery.deliveries,
                "stream_sequence": delivery.stream_sequence,
                "worker": self.worker_name,
            }
            request = Request.from_message(message, retries=retries, delivery_info=info)
        return Call(
            task=message.task,
            task_id=message.id,
            args=tuple(message.args),
            kwargs=message.kwargs,
            soft_time_limit=message.soft_time_limit or task.soft_time_limit,
            time_limit=message.time_limit or task.time_limit,
            request=request,
        )

    async def _skipped(self, delivery: Delivery, message: TaskMessage) -> bool:
        reason = await self.revoked.reason(message.id)
        if reason is None and message.expires is not None:
            expires = _utc(message.expires)
            if expires <= datetime.now(UTC):
                reason = f"expired at {expires.isoformat()}"
        if reason is None:
            return False
        log.info("not running %s: %s", message.task, reason)
        record = self._final(TaskState.REVOKED, error=reason)
        await self._store(message, record)
        # What depended on it (the rest of a chain, a chord) will not complete either.
        await self.continuation.on_failure(message, record)
        self.metrics.of(delivery.queue, message.task).revoked.inc()
        await delivery.ack()
        return True

    async def _unknown_task(self, delivery: Delivery, message: TaskMessage) -> None:
        error = f"task {message.task!r} is not registered in app {self.app.name!r}"
        log.error("dead-lettering: %s", error)
        await self._dead_letter(delivery, DeadLetterReason.UNKNOWN_TASK, error, None, message)
        record = self._final(TaskState.FAILURE, error=f"NotRegistered: {error}")
        record = record.model_copy(update={"exc_type": "NotRegistered"})
        await self._store(message, record)
        await self.continuation.on_failure(message, record)
        await delivery.term()

    async def _succeeded(
        self, delivery: Delivery, message: TaskMessage, outcome: Outcome, document: bytes | None
    ) -> None:
        log.info("succeeded in %.3fs", outcome.duration)
        if document is not None:
            results = self.broker.results
            await _persist(lambda: results.put_raw(message.id, document), "result")
        await self.continuation.on_success(message, outcome.value)
        await delivery.ack()
        self.metrics.of(delivery.queue, message.task).succeeded.inc()

    async def _failed(
        self,
        delivery: Delivery,
        message: TaskMessage,
        task: Task,
        error: ErrorInfo,
        *,
        retries: int,
        quiet: bool,
        final: bool,
    ) -> None:
        policy = RetryPolicy(
            max_retries=_first(error.max_retries, message.max_retries, task.max_retries),
            backoff=task.retry_backoff,
            backoff_max=task.retry_backoff_max,
            jitter=task.retry_jitter,
        )
        plan = GiveUp() if final else plan_retry(retries, policy, error.countdown, self.rng)
        if isinstance(plan, GiveUp):
            await self._gave_up(delivery, message, error, retries, quiet)
            return
        log.warning(
            "attempt %d failed (%s); retrying in %.2fs", retries + 1, error.error, plan.delay
        )
        if not quiet:
            record = ResultRecord(
                state=TaskState.RETRY,
                error=error.error,
                exc_type=error.exc_type,
                traceback=error.traceback,
                retries=retries,
                worker=self.worker_name,
            )
            await self._store(message, record)
        await delivery.nak(plan.delay)
        self.metrics.of(delivery.queue, message.task).retried.inc()

    async def _gave_up(
        self, delivery: Delivery, message: TaskMessage, error: ErrorInfo, retries: int, quiet: bool
    ) -> None:
        log.error("failed for good after %d attempt(s): %s", delivery.deliveries, error.error)
        record = self._final(TaskState.FAILURE, error=error.error).model_copy(
            update={"exc_type": error.exc_type, "traceback": error.traceback, "retries": retries}
        )
        reason = DeadLetterReason.MAX_RETRIES
        await self._dead_letter(delivery, reason, error.error, error.traceback, message)
        if not quiet:
            await self._store(message, record)
        await self.continuation.on_failure(message, record)
        await delivery.term()
        self.metrics.of(delivery.queue, message.task).failed.inc()

    async def _dead_letter(
        self,
        delivery: Delivery,
        reason: DeadLetterReason,
        error: str,
        traceback: str | None,
        source: TaskMessage | Rejection,
    ) -> None:
        msg = delivery.msg
        letter = DeadLetter(
            reason=reason,
            error=error,
            traceback=traceback,
            task_id=source.id if isinstance(source, TaskMessage) else source.task_id,
            task=source.task,
            queue=delivery.queue,
            deliveries=delivery.deliveries,
            stream_sequence=delivery.stream_sequence,
            worker=self.worker_name,
            failed_at=datetime.now(UTC),
            original=msg.data.decode(errors="replace"),
            original_headers={k: str(v) for k, v in (msg.headers or {}).items()},
        )
        try:
            await _persist(lambda: publish_dead_letter(self.broker, letter), "dead letter")
        except Exception as exc:
            raise DeadLetterError(f"dead letter not stored ({exc!r})") from exc
        self.metrics.of(delivery.queue, source.task or "-").dead_lettered.inc()

    def _final(self, state: TaskState, **fields: Any) -> ResultRecord:
        return ResultRecord(
            state=state, worker=self.worker_name, date_done=datetime.now(UTC), **fields
        )

    async def _store(self, message: TaskMessage, record: ResultRecord) -> None:
        record = record.model_copy(update={"task": message.task})
        await _persist(lambda: self.broker.results.put(message.id, record), "result")


def _first(*values: int | None) -> int | None:
    for value in values:
        if value is not None:
            return value
    return None


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def _persist(write: Callable[[], Awaitable[None]], what: str) -> None:
    """Retry a write through a short NATS outage (a server restart) before giving up."""
    for delay in _PERSIST_DELAYS:
        try:
            await write()
            return
        except (TimeoutError, NoRespondersError, NoStreamResponseError) as exc:
            log.warning("storing the %s failed (%r); trying again in %gs", what, exc, delay)
            await asyncio.sleep(delay)
    await write()


async def _nak_or_log(delivery: Delivery, delay: float) -> None:
    try:
        await delivery.nak(delay)
    except Exception as exc:
        log.error("could not NAK (%r); the message returns after ack_wait", exc)
