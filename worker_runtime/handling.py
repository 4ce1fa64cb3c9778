"""What the worker does with one message, from decoding to the final ack.

Order matters for at-least-once delivery: the result is stored and the canvas
continued before the ack; a dead letter is published (and acknowledged by
JetStream) before the original is terminated, so a crash at any point leaves the
message to be redelivered rather than lost. A delivery carrying ``Celeriac-Periodic``
is a periodic task's fire, not a task: ``firing`` turns it into a run.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import MaxRetriesExceededError, Retry
from celeriac.protocol.envelope import DeadLetter, DeadLetterReason, ResultRecord, TaskMessage
from celeriac.protocol.states import TaskState
from celeriac.protocol.webhooks import WebhookEvent
from celeriac.task import Request
from celeriac.worker_runtime import hooks
from celeriac.worker_runtime.backoff import (
    Failure,
    GiveUp,
    attempts_allowed,
    plan_retry,
    retry_limit,
)
from celeriac.worker_runtime.continuation import Continuation
from celeriac.worker_runtime.deadletters import HEADROOM, fit, original_headers, publish_dead_letter
from celeriac.worker_runtime.decoding import Rejection, decode_task
from celeriac.worker_runtime.delivery import Delivery
from celeriac.worker_runtime.events import TaskEvents
from celeriac.worker_runtime.execution import MAX_ERROR_CHARS, Call, ErrorInfo, Outcome, Pool
from celeriac.worker_runtime.firing import Fires, decode_fire, is_fire
from celeriac.worker_runtime.hooks import Ending
from celeriac.worker_runtime.limits import DeliveryLimits
from celeriac.worker_runtime.logs import set_task
from celeriac.worker_runtime.metrics import WorkerMetrics
from celeriac.worker_runtime.persisting import TRANSIENT, persist
from celeriac.worker_runtime.records import storable_success
from celeriac.worker_runtime.revoked import RevokedMirror
from celeriac.worker_runtime.signalling import signalled, terminated
from celeriac.worker_runtime.starting import start
from celeriac.worker_runtime.terminating import Terminator, terminated_reason
from celeriac.worker_runtime.tracing import processing
from celeriac.worker_runtime.verifying import verify
from celeriac.worker_runtime.webhookjobs import WebhookJobs

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.broker import Broker
    from celeriac.task import Task

log = logging.getLogger(__name__)

# When a dead letter cannot be published, try the whole message again this much later.
_DEAD_LETTER_RETRY_DELAY = 5.0
# When the result store or canvas fails after the task ran, redeliver this much later.
_SETTLE_RETRY_DELAY = 2.0
# A task still running this long after it began gets a STARTED record; a shorter one
# goes straight to its final state, which spares the many short tasks a write each.
STARTED_AFTER = 0.05
# Outcomes whose storing failed, kept so a redelivery to this worker settles them
# without running the task again; the oldest are forgotten beyond this many.
_UNSETTLED_KEPT = 10_000


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
    # Task events (celeriac worker --events); None: off, and nothing is spent on them.
    events: TaskEvents | None = None
    continuation: Continuation = field(init=False)
    _unsettled: OrderedDict[tuple[str, int], tuple[Outcome, int]] = field(
        init=False, default_factory=OrderedDict
    )
    limits: DeliveryLimits = field(init=False)
    fires: Fires = field(init=False)
    webhooks: WebhookJobs = field(init=False)
    # The attempts running now, for revoke(terminate=True).
    terminator: Terminator = field(init=False)

    def __post_init__(self) -> None:
        self.terminator = Terminator(self.pool)
        self.continuation = Continuation(self.broker)
        self.limits = DeliveryLimits(self.broker)
        self.fires = Fires(self.broker, self.rng)
        self.webhooks = WebhookJobs(self.broker)

    async def handle(self, delivery: Delivery, ran: Callable[[Outcome], None]) -> None:
        """Process one delivery; never raises except when cancelled.

        ``ran`` is called as soon as the attempt has returned, before its result is
        stored and the message acked: the execution slot can take the next message
        meanwhile (the outcome's ``still_running`` says when it is really free).

        Runs as an asyncio task of its own: the task id set for log lines lives in
        that task's context and ends with it.
        """
        await self._guarded(delivery, self._handle(delivery, ran))

    async def _handle(self, delivery: Delivery, ran: Callable[[Outcome], None]) -> None:
        msg, keys = delivery.msg, self.broker.signing_keys
        if keys is not None and (refused := verify(keys, delivery.queue, msg.headers, msg.data)):
            set_task(refused.task_id or "-", refused.task, delivery.queue)
            await self._reject(delivery, refused)
            return
        if is_fire(delivery.msg.headers):
            await self._fire(delivery)
            return
        decoded = decode_task(delivery.msg.data)
        if isinstance(decoded, Rejection):
            set_task(decoded.task_id or "-", decoded.task, delivery.queue)
            await self._reject(delivery, decoded)
            return
        set_task(decoded.id, decoded.task, delivery.queue)
        delivery.task_id, delivery.task = decoded.id, decoded.task
        with processing(delivery, decoded, ran) as traced_ran:
            await self._process(delivery, decoded, traced_ran)

    async def _fire(self, delivery: Delivery) -> None:
        """A periodic task's fire: enqueue its run (never run here), or dead-letter it."""
        fire = decode_fire(delivery.msg.data, delivery.msg.headers, delivery.queue)
        if isinstance(fire, Rejection):
            set_task("-", None, delivery.queue)
            await self._reject(delivery, fire)
            return
        set_task(fire.run, fire.periodic.task, delivery.queue)
        await self.fires.handle(delivery, fire)

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
        if self.events is not None:
            self.events.received(delivery, rejection)
        await self._dead_letter(delivery, rejection.reason, rejection.error, None, rejection)
        await delivery.term()

    async def _process(
        self, delivery: Delivery, message: TaskMessage, ran: Callable[[Outcome], None]
    ) -> None:
        metrics = self.metrics.of(delivery.queue, message.task)
        metrics.received.inc()
        if self.events is not None:
            self.events.received(delivery, message)
        task = self.app.tasks.get(message.task)
        if task is None:
            await self._unknown_task(delivery, message)
            return
        quiet = task.ignore_result or message.ignore_result
        remembered = self._unsettled.pop((delivery.queue, delivery.stream_sequence), None)
        if remembered is not None:
            log.info("storing the outcome of the earlier run of %s again", message.task)
            outcome, retries = remembered
            await self._after_run(delivery, message, task, outcome, retries=retries, quiet=quiet)
            return
        if await self._skipped(delivery, message):
            return
        retries = message.retries + delivery.deliveries - 1
        allowed = attempts_allowed(task, message.max_retries)
        if retries > allowed and not await self._retry_asked(message, retries, quiet=quiet):
            await self._poisoned(delivery, message, allowed, quiet=quiet)
            return
        log.info("running %s (attempt %d)", message.task, retries + 1)
        call = self._call(task, message, delivery, retries)
        if self.events is not None:
            self.events.started(delivery, message)
        if quiet:
            attempt = self.pool.run(task, call)
        else:
            attempt = self._run_tracked(task, call, message, retries)
        # before_start runs inside the attempt: within its time limit, terminable.
        attempt = start(task, message, call, attempt)
        # task_prerun before the attempt; a revoke with terminate=True may stop it.
        outcome = await signalled(task, call, self.terminator.run(task, call, attempt))
        ran(outcome)
        metrics.duration.observe(outcome.duration)
        if (stopped := terminated_reason(outcome)) is not None:
            await self._revoked(delivery, message, stopped)
            await terminated(task, message, stopped)
            return
        await self._after_run(delivery, message, task, outcome, retries=retries, quiet=quiet)

    async def _after_run(
        self,
        delivery: Delivery,
        message: TaskMessage,
        task: Task,
        outcome: Outcome,
        *,
        retries: int,
        quiet: bool,
    ) -> Ending:
        """Settle a finished run, then call the task class's hooks; if settling fails,
        keep its outcome so it is never re-run here."""
        try:
            ending = await self._settle(
                delivery, message, task, outcome, retries=retries, quiet=quiet
            )
        except Exception:
            key = (delivery.queue, delivery.stream_sequence)
            if outcome.error is not None:  # kept long: not the frames its traceback holds
                outcome.error = replace(outcome.error, exception=None)
            self._unsettled[key] = (outcome, retries)
            while len(self._unsettled) > _UNSETTLED_KEPT:
                self._unsettled.popitem(last=False)
            raise
        await hooks.after_run(task, message, ending)
        return ending

    async def _retry_asked(self, message: TaskMessage, retries: int, *, quiet: bool) -> bool:
        """Whether the attempt before this delivery asked for it (a ``self.retry()`` with
        a ``max_retries`` above the task's): its RETRY record says so. A task ignoring
        its results keeps no record: the one written for this is removed once read."""
        record = await self.broker.results.get(message.id)
        asked = (
            record is not None and record.state is TaskState.RETRY and record.retries == retries - 1
        )
        if asked and quiet:
            try:
                await self.broker.results.delete(message.id)
            except Exception as exc:  # left to expire with the bucket's TTL
                log.warning("could not remove the RETRY record of %s (%r)", message.id, exc)
        return asked

    async def _poisoned(
        self, delivery: Delivery, message: TaskMessage, allowed: int, *, quiet: bool
    ) -> None:
        """Past its attempts without an outcome for the last ones: never run it again."""
        error = ErrorInfo(
            "PoisonMessage",
            f"delivered {delivery.deliveries} times, more than its {allowed + 1} attempt(s): "
            "the runs before ended without an outcome (the worker running it crashed, was "
            "killed, or lost its connection to NATS); not running it again",
        )
        await self._gave_up(delivery, message, error, delivery.deliveries - 1, quiet,
                            reason=DeadLetterReason.POISON)  # fmt: skip

    async def _settle(
        self,
        delivery: Delivery,
        message: TaskMessage,
        task: Task,
        outcome: Outcome,
        *,
        retries: int,
        quiet: bool,
    ) -> Ending:
        """Store the outcome, continue the canvas, settle the message."""
        document: bytes | None = None
        # The value is stored, or handed to the next step: either way it must be JSON.
        passed_on = bool(message.chain) or message.chord is not None
        if outcome.error is None and (not quiet or passed_on):
            serialized = storable_success(
                message.task,
                outcome.value,
                retries=retries,
                worker=self.worker_name,
                max_payload=self.broker.nc.max_payload,
            )
            if isinstance(serialized, ErrorInfo):
                # The same code would return the same value: retrying is useless.
                outcome.error = serialized
                await self._gave_up(delivery, message, serialized, retries, quiet,
                                    reason=DeadLetterReason.UNSTORABLE_RESULT)  # fmt: skip
                return Ending(TaskState.FAILURE, error=serialized)
            document = None if quiet else serialized
        if outcome.error is None:
            await self._succeeded(delivery, message, outcome, document)
            return Ending(TaskState.SUCCESS, value=outcome.value)
        return await self._failed(
            delivery, message, task, outcome.error, retries=retries, quiet=quiet
        )

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
            root_id=message.root_id,
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
        await self._revoked(delivery, message, reason)
        return True

    async def _revoked(self, delivery: Delivery, message: TaskMessage, reason: str) -> None:
        """End REVOKED with ``reason``: skipped, or stopped by revoke(terminate=True)."""
        record = self._final(TaskState.REVOKED, error=reason)
        await self._store(message, record)
        # What depended on it (the rest of a chain, a chord) will not complete either.
        await self.continuation.on_failure(message, record)
        self.metrics.of(delivery.queue, message.task).revoked.inc()
        if self.events is not None:
            self.events.revoked(delivery, message, reason)
        await delivery.ack()

    async def _unknown_task(self, delivery: Delivery, message: TaskMessage) -> None:
        error = f"task {message.task!r} is not registered in app {self.app.name!r}"
        log.error("dead-lettering: %s", error)
        await self._dead_letter(delivery, DeadLetterReason.UNKNOWN_TASK, error, None, message)
        record = self._final(TaskState.FAILURE, error=f"NotRegistered: {error}")
        record = record.model_copy(update={"exc_type": "NotRegistered"})
        if await self._store_unless_final(message, record):
            await self.continuation.on_failure(message, record)
        await delivery.term()

    async def _succeeded(
        self, delivery: Delivery, message: TaskMessage, outcome: Outcome, document: bytes | None
    ) -> None:
        log.info("succeeded in %.3fs", outcome.duration)
        if document is not None:
            results = self.broker.results
            await persist(lambda: results.put_raw(message.id, document), "result")
        try:
            await self.continuation.on_success(message, outcome.value)
        except TRANSIENT:
            raise
        except Exception as exc:  # an invalid next step: sending it again fails again
            await self._continuation_failed(delivery, message, exc)
            return
        await self.webhooks.notify(delivery, message, WebhookEvent.SUCCEEDED, TaskState.SUCCESS,
                                   result=outcome.value)  # fmt: skip
        await delivery.ack()
        self.metrics.of(delivery.queue, message.task).succeeded.inc()
        if self.events is not None:
            self.events.succeeded(delivery, message, outcome.duration)

    async def _continuation_failed(
        self, delivery: Delivery, message: TaskMessage, exc: Exception
    ) -> None:
        """The task succeeded (its result is stored) but what follows it cannot be sent."""
        what = getattr(
            exc, "what", "the next chain step" if message.chain else "the chord callback"
        )
        error = f"InvalidContinuation: {what} cannot be sent: {exc}"[:MAX_ERROR_CHARS]
        log.error("%s", error)
        record = self._final(TaskState.FAILURE, error=error, exc_type="InvalidContinuation")
        await self.continuation.on_failure(message, record)
        reason = DeadLetterReason.INVALID_CONTINUATION
        await self._dead_letter(delivery, reason, error, None, message)
        await self.webhooks.notify(delivery, message, WebhookEvent.FAILED, TaskState.FAILURE,
                                   error=error, exc_type="InvalidContinuation")  # fmt: skip
        await delivery.term()
        self.metrics.of(delivery.queue, message.task).failed.inc()
        if self.events is not None:
            self.events.failed(delivery, message, "InvalidContinuation", error)

    async def _failed(
        self,
        delivery: Delivery,
        message: TaskMessage,
        task: Task,
        error: ErrorInfo,
        *,
        retries: int,
        quiet: bool,
    ) -> Ending:
        """A failed attempt: retried when it asked to be (``self.retry()``, an
        ``autoretry_for`` exception) and has retries left, else failed for good."""
        failure = Failure(
            requested=error.retry_requested,
            autoretry=error.autoretry,
            countdown=error.countdown,
            max_retries=error.max_retries,
        )
        plan = plan_retry(retries, task, message.max_retries, failure, self.rng)
        if isinstance(plan, GiveUp):
            final = _exhausted(message, error, retries) if plan.exhausted else error
            await self._gave_up(delivery, message, final, retries, quiet)
            return Ending(TaskState.FAILURE, error=final)
        limit = await self.limits.of(delivery.queue)
        if limit is not None and delivery.deliveries >= limit:
            # JetStream will not deliver it again: a NAK would leave it in the stream.
            max_retries = retry_limit(task, message.max_retries, failure)
            note = (
                f"{error.error}; not retried: the queue's maxDeliveries ({limit}) ran out "
                f"before max_retries ({max_retries}); set the TaskQueue's "
                "spec.delivery.maxDeliveries above max_retries + 1"
            )
            await self._gave_up(delivery, message, error, retries, quiet,
                                reason=DeadLetterReason.MAX_DELIVERIES, note=note)  # fmt: skip
            return Ending(TaskState.FAILURE, error=error)
        log.warning(
            "attempt %d failed (%s); retrying in %.2fs", retries + 1, error.error, plan.delay
        )
        # The next delivery is past the task's own attempts only when this failure
        # raised them (self.retry(max_retries=)): the RETRY record tells it that it is
        # no crash loop, so a task ignoring its results writes one too.
        if not quiet or retries + 1 > attempts_allowed(task, message.max_retries):
            record = ResultRecord(
                state=TaskState.RETRY,
                error=error.error,
                exc_type=error.exc_type,
                exc_module=error.exc_module,
                traceback=error.traceback,
                retries=retries,
                worker=self.worker_name,
            )
            await self._store(message, record)
        await delivery.nak(plan.delay)
        self.metrics.of(delivery.queue, message.task).retried.inc()
        if self.events is not None:
            self.events.retried(delivery, message, error.exc_type, error.error, plan.delay)
        return Ending(TaskState.RETRY, error=error)

    async def _gave_up(
        self,
        delivery: Delivery,
        message: TaskMessage,
        error: ErrorInfo,
        retries: int,
        quiet: bool,
        *,
        reason: DeadLetterReason = DeadLetterReason.MAX_RETRIES,
        note: str | None = None,
    ) -> None:
        """The end of the line: dead letter, FAILURE record, what depended on it, term."""
        log.error("failed for good after %d attempt(s): %s", delivery.deliveries, error.error)
        record = self._final(TaskState.FAILURE, error=error.error).model_copy(
            update={
                "exc_type": error.exc_type,
                "exc_module": error.exc_module,
                "traceback": error.traceback,
                "retries": retries,
            }
        )
        dead_error = note or error.error
        await self._dead_letter(delivery, reason, dead_error, error.traceback, message)
        if not quiet:
            await self._store(message, record)
        await self.continuation.on_failure(message, record)
        await self.webhooks.notify(delivery, message, WebhookEvent.FAILED, TaskState.FAILURE,
                                   error=error.error, exc_type=error.exc_type)  # fmt: skip
        await delivery.term()
        self.metrics.of(delivery.queue, message.task).failed.inc()
        if self.events is not None:
            self.events.failed(delivery, message, error.exc_type, error.error)

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
            error=error[:MAX_ERROR_CHARS],
            traceback=traceback,
            task_id=source.id if isinstance(source, TaskMessage) else source.task_id,
            task=source.task,
            queue=delivery.queue,
            deliveries=delivery.deliveries,
            stream_sequence=delivery.stream_sequence,
            worker=self.worker_name,
            failed_at=datetime.now(UTC),
            original="",
            original_headers=original_headers(msg.headers),
        )
        letter = fit(letter, msg.data or b"", self.broker.nc.max_payload - HEADROOM)
        try:
            await persist(lambda: publish_dead_letter(self.broker, letter), "dead letter")
        except Exception as exc:
            raise DeadLetterError(f"dead letter not stored ({exc!r})") from exc
        if isinstance(source, TaskMessage):
            await self.webhooks.notify(delivery, source, WebhookEvent.DEAD_LETTERED,
                                       TaskState.FAILURE, error=letter.error,
                                       reason=reason.value)  # fmt: skip
        self.metrics.of(delivery.queue, source.task or "-").dead_lettered.inc()
        if self.events is not None:
            self.events.dead_lettered(delivery, source, reason, error)

    def _final(self, state: TaskState, **fields: Any) -> ResultRecord:
        return ResultRecord(
            state=state, worker=self.worker_name, date_done=datetime.now(UTC), **fields
        )

    async def _store(self, message: TaskMessage, record: ResultRecord) -> None:
        record = record.model_copy(update={"task": message.task})
        await persist(lambda: self.broker.results.put(message.id, record), "result")

    async def _store_unless_final(self, message: TaskMessage, record: ResultRecord) -> bool:
        """Store ``record`` unless the id already has a final result (a message reusing
        the id of a finished task must not overwrite its outcome); True when stored."""
        existing = await self.broker.results.get(message.id)
        if existing is not None and existing.state.ready:
            log.warning("not overwriting the %s result of %s", existing.state.value, message.id)
            return False
        await self._store(message, record)
        return True


def _exhausted(message: TaskMessage, error: ErrorInfo, retries: int) -> ErrorInfo:
    """The final error of a task out of retries: the error that asked for the last
    retry, or ``MaxRetriesExceededError`` for a bare ``self.retry()``."""
    if not (error.retry_requested and error.exc_type == Retry.__name__):
        return error
    text = f"cannot retry {message.task}[{message.id}]: it has had its {retries} retries"
    return ErrorInfo(
        MaxRetriesExceededError.__name__,
        text,
        error.traceback,
        exception=MaxRetriesExceededError(text),
    )


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def _nak_or_log(delivery: Delivery, delay: float) -> None:
    try:
        await delivery.nak(delay)
    except Exception as exc:
        log.error("could not NAK (%r); the message returns after ack_wait", exc)
