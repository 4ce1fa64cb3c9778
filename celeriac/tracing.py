"""OpenTelemetry spans for publishing tasks, after the messaging semantic conventions.

With ``opentelemetry-api`` importable (``pip install 'celeriac[otel]'``), each task
message published gets a PRODUCER span ``send <queue>``, and the W3C trace context
of that span (``traceparent``, ``tracestate``) goes into the message's NATS headers
through the global propagator, so the worker's span for the message continues the
same trace. Spans are recorded once the application sets a tracer provider; until
then nothing is done (see ``active``).

Without the package nothing here runs: ``ENABLED`` is decided once, at import, and
the functions the publishing path calls return a shared no-op at the cost of one
call. The worker's side is ``celeriac.worker_runtime.tracing``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING

from celeriac import __version__

if TYPE_CHECKING:
    from celeriac.protocol.envelope import TaskMessage
    from celeriac.publishing import Publication
    from celeriac.submitting import Delayed

try:
    from opentelemetry import trace
    from opentelemetry.propagate import inject
    from opentelemetry.trace import (
        NoOpTracerProvider,
        ProxyTracerProvider,
        Span,
        SpanKind,
        Status,
        StatusCode,
    )
except ImportError:  # celeriac[otel] not installed: publishing stays exactly as it was
    ENABLED = False
else:
    ENABLED = True
    # A proxy until the application sets a provider, then that provider's tracer.
    TRACER = trace.get_tracer("celeriac", __version__)
    # What the global provider is while the application has set none.
    _UNSET = (ProxyTracerProvider, NoOpTracerProvider)

#: ``messaging.system`` of every Celeriac span.
SYSTEM = "nats"

#: Attribute values a span may carry (what OpenTelemetry accepts, minus sequences).
Attributes = dict[str, str | int | bool]
#: Told which publishes of a batch failed, by index: ``sending_many`` yields one.
Report = Callable[[Mapping[int, BaseException]], None]


def send_attributes(message: TaskMessage, body_size: int) -> Attributes:
    """The attributes of the PRODUCER span publishing ``message`` (``body_size`` bytes)."""
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": message.queue,
        "messaging.message.id": message.id,
        "messaging.message.body.size": body_size,
        "celeriac.task.name": message.task,
    }


def send_span_name(message: TaskMessage) -> str:
    """``send <queue>``: the operation and the destination, as the conventions name it."""
    return f"send {message.queue}"


def active() -> bool:
    """True when spans are recorded: ``opentelemetry-api`` is importable and the
    application has set a tracer provider.

    Asked per message (a fraction of a microsecond), since the provider may be set
    after Celeriac is imported. Without a provider Celeriac skips its spans
    altogether, so the API's no-op spans cost nothing per task either; no trace
    context is passed on then.
    """
    return ENABLED and not isinstance(trace.get_tracer_provider(), _UNSET)


def _report_nothing(errors: Mapping[int, BaseException]) -> None:
    return None


_NOTHING: AbstractContextManager[None] = nullcontext()
_NOTHING_TO_REPORT: AbstractContextManager[Report] = nullcontext(_report_nothing)


def sending(message: TaskMessage, pub: Publication) -> AbstractContextManager[None]:
    """A PRODUCER span for the publish of ``message`` as ``pub``, ended on exit.

    Injects the span's trace context into ``pub.headers``; an exception leaving the
    block marks the span ERROR. A shared no-op unless ``active()``.
    """
    if not ENABLED or not active():
        return _NOTHING
    return _sending(message, pub)


def sending_many(
    items: Sequence[Delayed], pubs: Sequence[Publication]
) -> AbstractContextManager[Report]:
    """One PRODUCER span per message of a pipelined batch (``pubs[i]`` publishes
    ``items[i]``), all ended on exit.

    Yields a function to call with the errors of the publishes that failed, by index
    (their spans are marked ERROR); an exception leaving the block marks them all.
    """
    if not ENABLED or not active():
        return _NOTHING_TO_REPORT
    return _sending_many(items, pubs)


# Called only when ENABLED: the OpenTelemetry names exist then.


def _start_send(message: TaskMessage, pub: Publication) -> Span:
    span = TRACER.start_span(
        send_span_name(message),
        kind=SpanKind.PRODUCER,
        attributes=send_attributes(message, len(pub.payload)),
    )
    inject(pub.headers, context=trace.set_span_in_context(span))
    return span


def fail(span: Span, error_type: str, message: str | None = None) -> None:
    """Mark ``span`` ERROR with ``error_type`` (an exception's class name)."""
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, error_type))
    if message is not None:
        span.add_event("exception", {"exception.type": error_type, "exception.message": message})


def _fail_with(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    fail(span, type(exc).__name__)


@contextmanager
def _sending(message: TaskMessage, pub: Publication) -> Iterator[None]:
    span = _start_send(message, pub)
    try:
        yield
    except BaseException as exc:
        _fail_with(span, exc)
        raise
    finally:
        span.end()


@contextmanager
def _sending_many(items: Sequence[Delayed], pubs: Sequence[Publication]) -> Iterator[Report]:
    spans = [_start_send(item.message, pub) for item, pub in zip(items, pubs, strict=True)]

    def report(errors: Mapping[int, BaseException]) -> None:
        for index, exc in errors.items():
            _fail_with(spans[index], exc)

    try:
        yield report
    except BaseException as exc:
        for span in spans:
            _fail_with(span, exc)
        raise
    finally:
        for span in spans:
            span.end()
