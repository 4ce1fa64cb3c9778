"""The worker-test tasks, traced: the tracing tests run their workers with ``-A traced``.

When ``CELERIAC_TEST_SPANS`` names a file, importing this module sets a tracer
provider (the OpenTelemetry SDK's) that appends every finished span to that file as
one JSON line, as soon as it ends, so the test process reads the worker's spans.
Without the variable no provider is set and the OpenTelemetry API stays a no-op.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from wtasks import task, worker_app

SPANS_ENV = "CELERIAC_TEST_SPANS"

app = worker_app
tracer = trace.get_tracer("tests.traced")


class JsonLinesExporter(SpanExporter):
    """Appends each span as a line of JSON (``ReadableSpan.to_json``) to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()  # the thread pool ends spans from other threads

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(json.loads(span.to_json())) + "\n" for span in spans)
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS


if os.environ.get(SPANS_ENV):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(os.environ[SPANS_ENV])))
    trace.set_tracer_provider(provider)


@task(name="t.nested")
def nested(x: int) -> int:
    """Opens a span of its own: it nests under the worker's when that is current."""
    with tracer.start_as_current_span("user work"):
        return x * 2


@task(name="t.anested")
async def anested(x: int) -> int:
    with tracer.start_as_current_span("user work"):
        await asyncio.sleep(0)
        return x * 2


@task(name="t.total")
def total(values: list[int]) -> int:
    return sum(values)
