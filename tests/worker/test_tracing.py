"""OpenTelemetry tracing across a real submit, a real ``celeriac worker`` and NATS.

The test process records its spans with the SDK's ``InMemorySpanExporter``; the
worker runs ``-A traced`` (tests/worker/apps/traced.py), whose tracer provider
writes each span it ends to a JSON-lines file named by ``CELERIAC_TEST_SPANS``.
The checks: the worker's CONSUMER span continues the submitter's trace (its parent
is the PRODUCER span), retries and chain steps stay in that trace, a failed attempt
is an ERROR span, a periodic task's fire starts a trace of its own, and without a
tracer provider (or without OpenTelemetry at all) nothing is recorded and nothing
breaks.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from celeriac import chain, chord, tracing
from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.exceptions import TaskError
from celeriac.periodic import catch_up_message, define, latest_slot
from celeriac.protocol import names
from celeriac.protocol.envelope import TaskMessage
from celeriac.protocol.periodic import run_id
from celeriac.publishing import task_publication
from celeriac.worker_runtime.tracing import fire_attributes, process_attributes
from tests.support import WORKER_APPS, StartWorker, WorkerApp, await_until

SPANS_ENV = "CELERIAC_TEST_SPANS"
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Seen:
    """A finished span, from either process, as the checks need it."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str | None
    status: str
    description: str | None
    attributes: dict[str, Any]

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Seen:
        """From ``ReadableSpan.to_json()``'s document."""
        status = doc.get("status") or {}
        return cls(
            name=doc["name"],
            kind=doc["kind"].removeprefix("SpanKind."),
            trace_id=doc["context"]["trace_id"],
            span_id=doc["context"]["span_id"],
            parent_id=doc.get("parent_id"),
            status=status.get("status_code", "UNSET"),
            description=status.get("description"),
            attributes=dict(doc.get("attributes") or {}),
        )

    @property
    def message_id(self) -> str | None:
        return self.attributes.get("messaging.message.id")


def seen(span: ReadableSpan) -> Seen:
    return Seen.of(json.loads(span.to_json()))


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Spans of this process (the submitting side), kept in memory."""
    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # a provider can be set once per process
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory
    memory.shutdown()


@pytest.fixture
def spans_file(tmp_path: Path) -> Path:
    return tmp_path / "worker-spans.jsonl"


@pytest.fixture
def worker_app(spans_file: Path) -> WorkerApp:
    """Workers of these tests run ``traced``, writing their spans to ``spans_file``."""
    return WorkerApp("traced", WORKER_APPS, env={SPANS_ENV: str(spans_file)})


def submitted(exporter: InMemorySpanExporter, task_id: str) -> Seen:
    """The PRODUCER span of this process that sent ``task_id``."""
    [span] = [s for s in map(seen, exporter.get_finished_spans()) if s.message_id == task_id]
    return span


def worker_spans(path: Path) -> list[Seen]:
    if not path.exists():
        return []
    return [Seen.of(json.loads(line)) for line in path.read_text().splitlines() if line]


async def wait_spans(path: Path, count: int, what: str, **match: Any) -> list[Seen]:
    """The worker's spans whose fields equal ``match``, once there are ``count`` of them."""

    def enough() -> list[Seen] | None:
        found = [s for s in worker_spans(path) if all(getattr(s, k) == v for k, v in match.items())]
        return found if len(found) >= count else None

    return await await_until(enough, timeout=30, what=what)


# The attributes, as pure functions ---------------------------------------------------------


MESSAGE = TaskMessage(id="t-1", task="shop.digest", queue="emails", retries=1)


@pytest.mark.parametrize(
    ("deliveries", "count", "retries"),
    [(1, 1, 1), (3, 3, 3)],
)
def test_process_attributes_count_deliveries_and_retries(
    deliveries: int, count: int, retries: int
) -> None:
    attributes = process_attributes("emails", MESSAGE, deliveries)
    assert attributes == {
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "emails",
        "messaging.consumer.group.name": "workers",
        "messaging.message.id": "t-1",
        "celeriac.task.name": "shop.digest",
        "celeriac.delivery.count": count,
        "celeriac.task.retries": retries,
    }


def test_send_attributes_name_the_queue_the_id_and_the_task() -> None:
    assert tracing.send_span_name(MESSAGE) == "send emails"
    assert tracing.send_attributes(MESSAGE, 120) == {
        "messaging.system": "nats",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "emails",
        "messaging.message.id": "t-1",
        "messaging.message.body.size": 120,
        "celeriac.task.name": "shop.digest",
    }


def test_fire_attributes_name_the_schedule_and_its_run() -> None:
    periodic = define(name="nightly", task="shop.digest", queue="emails", cron_text="0 3 * * *")
    slot = datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
    attributes = fire_attributes("emails", periodic, slot, run_id("nightly", slot))
    assert attributes["messaging.message.id"] == run_id("nightly", slot)
    assert attributes["celeriac.schedule.name"] == "nightly"
    assert attributes["celeriac.schedule.slot"] == "2026-01-02T03:00:00+00:00"
    assert attributes["messaging.operation.name"] == "fire"


def test_the_publish_carries_the_span_context_in_its_headers(
    exporter: InMemorySpanExporter,
) -> None:
    pub = task_publication(MESSAGE)
    with tracing.sending(MESSAGE, pub):
        pass
    span = submitted(exporter, "t-1")
    exporter.clear()
    assert pub.headers["traceparent"].startswith(f"00-{span.trace_id[2:]}-{span.span_id[2:]}-")
    assert (span.name, span.kind, span.status) == ("send emails", "PRODUCER", "UNSET")


# Without OpenTelemetry at all --------------------------------------------------------------

WITHOUT_OTEL = """\
import contextlib
from celeriac import tracing
from celeriac.protocol.envelope import TaskMessage
from celeriac.publishing import task_publication
from celeriac.worker_runtime import tracing as worker_tracing

message = TaskMessage(id="t-1", task="shop.digest", queue="emails")
pub = task_publication(message)
before = dict(pub.headers)
assert tracing.ENABLED is False
assert tracing.sending(message, pub) is tracing.sending(message, pub)
with tracing.sending(message, pub), tracing.sending_many([], []) as report:
    report({{}})
ran = print
with worker_tracing.processing(None, message, ran) as passed:
    assert passed is ran
assert pub.headers == before
print("no tracing")
"""


def test_without_opentelemetry_nothing_is_traced_and_headers_stay_as_they_were(
    tmp_path: Path,
) -> None:
    # A regular package named opentelemetry earlier on the path hides the installed one.
    hidden = tmp_path / "hidden" / "opentelemetry"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden.parent), str(ROOT)])}
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_OTEL.format()], env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no tracing"


# End to end --------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    ("pool", "task"),
    [("asyncio", "t.anested"), ("threads", "t.nested"), ("processes", "t.nested")],
)
async def test_the_worker_span_continues_the_submitters_trace(
    *,
    exporter: InMemorySpanExporter,
    start_worker: StartWorker,
    client: Celeriac,
    queue: str,
    spans_file: Path,
    pool: str,
    task: str,
) -> None:
    start_worker(queue, pool=pool, concurrency=2)
    result = await client.asend_task(task, [21], queue=queue)
    assert await result.aget(timeout=30) == 42

    sent = submitted(exporter, result.id)
    assert (sent.name, sent.kind) == (f"send {queue}", "PRODUCER")
    assert sent.attributes["messaging.system"] == "nats"
    assert sent.attributes["messaging.destination.name"] == queue
    assert sent.attributes["messaging.operation.type"] == "send"
    assert sent.attributes["celeriac.task.name"] == task
    [processed] = await wait_spans(spans_file, 1, "the worker's span", name=f"process {task}")
    assert processed.kind == "CONSUMER"
    assert processed.trace_id == sent.trace_id
    assert processed.parent_id == sent.span_id
    assert processed.status == "UNSET"
    assert processed.attributes == process_attributes(
        queue, TaskMessage(id=result.id, task=task, queue=queue), 1
    )
    if pool != "processes":  # the task's own span nests under the worker's
        [user] = await wait_spans(spans_file, 1, "the task's own span", name="user work")
        assert (user.trace_id, user.parent_id) == (processed.trace_id, processed.span_id)


@pytest.mark.integration
@pytest.mark.parametrize(("pool", "task"), [("threads", "w.submit"), ("asyncio", "w.asubmit")])
async def test_a_task_submitted_by_a_task_continues_its_trace(
    *,
    exporter: InMemorySpanExporter,
    start_worker: StartWorker,
    client: Celeriac,
    queue: str,
    spans_file: Path,
    pool: str,
    task: str,
) -> None:
    start_worker(queue, pool=pool, concurrency=2)
    # A blocking submit under a span of the caller's (a web request's, say), from a thread.
    with trace.get_tracer("tests").start_as_current_span("handling a request") as outer:
        result = await asyncio.to_thread(client.send_task, task, [1], queue=queue)
    child_id = await result.aget(timeout=30)

    sent = submitted(exporter, result.id)
    assert sent.parent_id == f"0x{outer.get_span_context().span_id:016x}"
    [parent] = await wait_spans(spans_file, 1, "the submitting task", name=f"process {task}")
    [child_sent] = await wait_spans(spans_file, 1, "the child's send", name=f"send {queue}")
    assert child_sent.message_id == child_id
    assert (child_sent.trace_id, child_sent.parent_id) == (sent.trace_id, parent.span_id)


@pytest.mark.integration
async def test_a_delayed_task_keeps_its_trace_through_the_servers_schedule(
    exporter: InMemorySpanExporter,
    start_worker: StartWorker,
    client: Celeriac,
    queue: str,
    spans_file: Path,
) -> None:
    start_worker(queue)
    result = await client.asend_task("w.add", [1, 1], queue=queue, countdown=0.5)
    assert await result.aget(timeout=30) == 2

    sent = submitted(exporter, result.id)
    [processed] = await wait_spans(spans_file, 1, "the delayed run", name="process w.add")
    assert (processed.trace_id, processed.parent_id) == (sent.trace_id, sent.span_id)


@pytest.mark.integration
async def test_a_task_retried_twice_is_one_trace_of_three_attempts(
    exporter: InMemorySpanExporter,
    start_worker: StartWorker,
    client: Celeriac,
    queue: str,
    spans_file: Path,
) -> None:
    start_worker(queue)
    result = await client.asend_task("w.flaky", [2], queue=queue)
    assert await result.aget(timeout=30) == 2

    sent = submitted(exporter, result.id)
    attempts = await wait_spans(spans_file, 3, "three attempts", name="process w.flaky")
    assert len(attempts) == 3
    assert {(s.trace_id, s.parent_id) for s in attempts} == {(sent.trace_id, sent.span_id)}
    by_count = sorted(attempts, key=lambda s: s.attributes["celeriac.delivery.count"])
    assert [s.attributes["celeriac.task.retries"] for s in by_count] == [0, 1, 2]
    assert [s.status for s in by_count] == ["ERROR", "ERROR", "UNSET"]
    assert by_count[0].description == "RuntimeError"


@pytest.mark.integration
async def test_a_failing_task_ends_its_spans_in_error(
    exporter: InMemorySpanExporter,
    start_worker: StartWorker,
    client: Celeriac,
    queue: str,
    spans_file: Path,
) -> None:
    start_worker(queue)
    result = await client.asend_task("w.fail", queue=queue)
    with pytest.raises(TaskError):
        await result.aget(timeout=30)

    sent = submitted(exporter, result.id)
    attempts = await wait_spans(spans_file, 3, "three failed attempts", name="process w.fail")
    assert {(s.trace_id, s.parent_id) for s in attempts} == {(sent.trace_id, sent.span_id)}
    assert {(s.status, s.description) for s in attempts} == {("ERROR", "ValueError")}
    assert {s.attributes["error.type"] for s in attempts} == {"ValueError"}


@pytest.mark.integration
async def test_a_chain_step_is_sent_and_processed_in_the_same_trace(
    exporter: InMemorySpanExporter,
    start_worker: StartWorker,
    client: Celeriac,
    queue: str,
    spans_file: Path,
) -> None:
    start_worker(queue)
    first = client.signature("w.add", [1, 2], queue=queue)
    then = client.signature("w.add", [3], queue=queue)
    result = await chain(first, then).aapply_async()
    assert await result.aget(timeout=30) == 6

    [sent_a] = [
        s
        for s in map(seen, exporter.get_finished_spans())
        if s.attributes.get("messaging.destination.name") == queue
    ]
    steps = await wait_spans(spans_file, 2, "both steps", name="process w.add")
    [process_a] = [s for s in steps if s.message_id == sent_a.message_id]
    [process_b] = [s for s in steps if s.message_id == result.id]
    [sent_b] = await wait_spans(spans_file, 1, "the step's send", name=f"send {queue}")
    assert sent_b.message_id == result.id and sent_b.kind == "PRODUCER"
    assert process_a.parent_id == sent_a.span_id
    assert sent_b.parent_id == process_a.span_id  # published while a's span was current
    assert process_b.parent_id == sent_b.span_id
    traces = {s.trace_id for s in (sent_a, process_a, sent_b, process_b)}
    assert traces == {sent_a.trace_id}


@pytest.mark.integration
async def test_a_chords_callback_follows_the_member_that_completed_it(
    exporter: InMemorySpanExporter,
    start_worker: StartWorker,
    client: Celeriac,
    queue: str,
    spans_file: Path,
) -> None:
    start_worker(queue)
    members = [client.signature("w.add", [i, i], queue=queue) for i in (1, 2)]
    body = client.signature("t.total", queue=queue)
    with trace.get_tracer("tests").start_as_current_span("submitting a chord") as outer:
        result = await chord(members, body).aapply_async()
    assert await result.aget(timeout=30) == 6

    trace_id = f"0x{outer.get_span_context().trace_id:032x}"
    runs = await wait_spans(spans_file, 2, "both members", name="process w.add")
    [callback_sent] = await wait_spans(spans_file, 1, "the callback's send", name=f"send {queue}")
    [callback] = await wait_spans(spans_file, 1, "the callback", name="process t.total")
    assert callback_sent.message_id == callback.message_id == result.id
    assert callback_sent.parent_id in {run.span_id for run in runs}
    assert callback.parent_id == callback_sent.span_id
    assert {s.trace_id for s in [*runs, callback_sent, callback]} == {trace_id}


@pytest.mark.integration
async def test_each_message_of_a_batch_has_its_own_producer_span(
    exporter: InMemorySpanExporter,
    start_worker: StartWorker,
    client: Celeriac,
    queue: str,
    spans_file: Path,
) -> None:
    start_worker(queue)
    signatures = [client.signature("w.add", [i, i], queue=queue) for i in range(3)]
    results = await client.asend_many(signatures)
    assert [await r.aget(timeout=30) for r in results] == [0, 2, 4]

    processed = await wait_spans(spans_file, 3, "three runs", name="process w.add")
    sent = [submitted(exporter, r.id) for r in results]
    assert len({s.span_id for s in sent}) == 3
    for producer in sent:
        [consumer] = [s for s in processed if s.message_id == producer.message_id]
        assert (consumer.trace_id, consumer.parent_id) == (producer.trace_id, producer.span_id)


@pytest.mark.integration
async def test_a_fires_run_starts_a_trace_of_its_own(
    *,
    exporter: InMemorySpanExporter,
    start_worker: StartWorker,
    broker: Broker,
    client: Celeriac,
    queue: str,
    spans_file: Path,
) -> None:
    periodic = define(
        name=f"p-{uuid.uuid4().hex[:10]}", task="w.add", queue=queue,
        cron_text="0 0 0 1 1 *", args=[2, 3], expires=2 * 365 * 86_400,
    )  # fmt: skip
    slot = latest_slot(periodic, datetime.now(UTC), None)
    assert slot is not None
    run = run_id(periodic.name, slot)
    await broker.ensure_queue(queue)
    start_worker(queue)
    # The fire's message carries a trace context of its own: the run must not join it.
    subject, headers, payload = catch_up_message(periodic, slot)
    with trace.get_tracer("tests").start_as_current_span("requesting the catch-up") as outer:
        inject(headers)
    await broker.js.publish(subject, payload, headers=headers)
    assert await client.AsyncResult(run).aget(timeout=30) == 5

    [fired] = await wait_spans(spans_file, 1, "the fire's span", name=f"fire {periodic.name}")
    assert fired.parent_id is None and fired.kind == "CONSUMER"
    assert fired.trace_id != f"0x{outer.get_span_context().trace_id:032x}"
    [sent] = await wait_spans(spans_file, 1, "the run's send", name=f"send {queue}")
    [ran] = await wait_spans(spans_file, 1, "the run", name="process w.add")
    assert sent.message_id == ran.message_id == run
    assert sent.parent_id == fired.span_id and ran.parent_id == sent.span_id
    assert {fired.trace_id, sent.trace_id, ran.trace_id} == {fired.trace_id}


NO_PROVIDER_CLIENT = """\
import asyncio, sys
from celeriac.app import Celeriac

async def main() -> None:
    app = Celeriac("no-provider", nats_url=sys.argv[1])
    result = await app.asend_task("w.add", [2, 3], queue=sys.argv[2])
    print(result.id)
    await app.aclose()

asyncio.run(main())
"""


@pytest.mark.integration
async def test_without_a_tracer_provider_nothing_is_recorded_and_tasks_run(
    *,
    start_worker: StartWorker,
    broker: Broker,
    client: Celeriac,
    nats_url: str,
    queue: str,
    spans_file: Path,
) -> None:
    await broker.ensure_queue(queue)
    # A client process with OpenTelemetry installed but no provider set: no-op spans.
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", textwrap.dedent(NO_PROVIDER_CLIENT), nats_url, queue],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    task_id = proc.stdout.strip()
    stored = await broker.js.get_last_msg(names.stream_name(queue), names.task_subject(queue))
    assert stored.headers is not None and stored.headers[names.HDR_MSG_ID] == task_id
    assert "traceparent" not in stored.headers  # a no-op span has no context to carry

    # A worker with no provider set either runs it as usual and records nothing.
    start_worker(queue, env={SPANS_ENV: ""})
    assert await client.AsyncResult(task_id).aget(timeout=30) == 5
    assert not await asyncio.to_thread(spans_file.exists)
