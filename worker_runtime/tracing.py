"""OpenTelemetry spans for what the worker does with a message.

The whole handling of a task message (the run, storing its result, the retry,
publishing the next chain step or a chord's callback) happens inside a CONSUMER
span ``process <task name>`` whose parent is the trace context the publisher put
in the message's headers. The span is current while the task runs in the asyncio
and thread pools, so spans the task code opens nest under it, and while the worker
publishes what follows, so the next step's ``send`` span continues the same trace.
A retry is a redelivery of the same message: each attempt is one more
``process`` span under the same producer.

A periodic task's fire starts a new trace: its ``fire <schedule>`` span has no
parent, and the run it publishes is its child.

Without ``opentelemetry-api``, or without a tracer provider set (see
``celeriac.tracing.active``), the functions here hand back what they were given in a
no-op context manager.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING

from celeriac import tracing
from celeriac.protocol import names
from celeriac.tracing import SYSTEM, Attributes

if TYPE_CHECKING:
    from datetime import datetime

    from celeriac.protocol.envelope import TaskMessage
    from celeriac.protocol.periodic import PeriodicTask
    from celeriac.worker_runtime.delivery import Delivery
    from celeriac.worker_runtime.execution import Outcome

if tracing.ENABLED:
    from opentelemetry.context import Context
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

Ran = Callable[["Outcome"], None]
_NOTHING: AbstractContextManager[None] = nullcontext()


def process_attributes(queue: str, message: TaskMessage, deliveries: int) -> Attributes:
    """The attributes of the CONSUMER span handling ``message``'s ``deliveries``-th delivery."""
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": queue,
        "messaging.consumer.group.name": names.CONSUMER_NAME,
        "messaging.message.id": message.id,
        "celeriac.task.name": message.task,
        "celeriac.delivery.count": deliveries,
        "celeriac.task.retries": message.retries + deliveries - 1,
    }


def fire_attributes(queue: str, periodic: PeriodicTask, slot: datetime, run: str) -> Attributes:
    """The attributes of the span of a periodic task's fire for ``slot`` (run id ``run``)."""
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "fire",
        "messaging.destination.name": queue,
        "messaging.consumer.group.name": names.CONSUMER_NAME,
        "messaging.message.id": run,
        "celeriac.schedule.name": periodic.name,
        "celeriac.schedule.slot": slot.isoformat(),
        "celeriac.task.name": periodic.task,
    }


def processing(delivery: Delivery, message: TaskMessage, ran: Ran) -> AbstractContextManager[Ran]:
    """The CONSUMER span around handling ``message``; yields ``ran`` to pass on.

    The span continues the trace in the delivery's headers and ends ERROR when the
    attempt failed (the outcome ``ran`` was told about has an error, checked on exit
    since storing the result may still turn a success into a failure) or when an
    exception leaves the block.
    """
    if not tracing.ENABLED or not tracing.active():
        return nullcontext(ran)
    return _processing(delivery, message, ran)


def firing(
    queue: str, periodic: PeriodicTask, slot: datetime, run: str
) -> AbstractContextManager[None]:
    """A root span around handling a fire of ``periodic``: its run's trace starts here."""
    if not tracing.ENABLED or not tracing.active():
        return _NOTHING
    return _firing(queue, periodic, slot, run)


# Called only when tracing.ENABLED: the OpenTelemetry names exist then.


@contextmanager
def _processing(delivery: Delivery, message: TaskMessage, ran: Ran) -> Iterator[Ran]:
    parent = extract(delivery.msg.headers or {})
    seen: list[Outcome] = []

    def noted(outcome: Outcome) -> None:
        seen.append(outcome)
        ran(outcome)

    with tracing.TRACER.start_as_current_span(
        f"process {message.task}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=process_attributes(delivery.queue, message, delivery.deliveries),
    ) as span:
        yield noted
        error = seen[0].error if seen else None
        if error is not None:
            tracing.fail(span, error.exc_type, error.message)


@contextmanager
def _firing(queue: str, periodic: PeriodicTask, slot: datetime, run: str) -> Iterator[None]:
    with tracing.TRACER.start_as_current_span(
        f"fire {periodic.name}",
        context=Context(),  # no parent: whatever the schedule's message carried is old
        kind=SpanKind.CONSUMER,
        attributes=fire_attributes(queue, periodic, slot, run),
    ):
        yield
