"""Task events: ``celeriac worker --events`` publishes them, ``celeriac events`` shows them.

Real nats-server, real worker subprocesses; the events are read back from the
``CELERIAC_EVENTS`` stream as any other program would read them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.exceptions import TaskError
from celeriac.operator.queues import QueueReport, ensure_events_stream, ensure_queue
from celeriac.protocol import jetstream, names
from celeriac.protocol.envelope import DeadLetterReason, TaskMessage
from celeriac.protocol.events import EVENT_ERROR_CHARS, EventType, TaskEvent, clip_error
from celeriac.protocol.states import TaskState
from celeriac.protocol.workers import WORKER_NAME_ENV
from celeriac.worker_runtime.delivery import Delivery
from celeriac.worker_runtime.events import TaskEvents
from celeriac.worker_runtime.metrics import Count
from celeriac.worker_runtime.options import OptionsError, parse_options
from tests.support import StartWorker, await_until, wait_dead_letters
from tests.worker.test_admin import celeriac

R, S, OK, RETRY = EventType.RECEIVED, EventType.STARTED, EventType.SUCCEEDED, EventType.RETRIED
MiB = 2**20


async def stored_count(broker: Broker, queue: str) -> int:
    """Events of ``queue`` in the stream now (0 when the stream is missing)."""
    try:
        info = await broker.js.stream_info(
            names.EVENTS_STREAM, subjects_filter=names.event_filter(queue)
        )
    except NotFoundError:
        return 0
    return sum((info.state.subjects or {}).values())


async def read_events(broker: Broker, queue: str, count: int) -> list[TaskEvent]:
    """Wait for ``count`` events of ``queue``, then read them in stream order."""
    await await_until(
        lambda: _at_least(broker, queue, count), timeout=30, what=f"{count} events of {queue}"
    )
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    sub = await broker.js.subscribe(
        names.event_filter(queue), stream=names.EVENTS_STREAM, ordered_consumer=True, config=config
    )
    try:
        return [
            TaskEvent.model_validate_json((await sub.next_msg(timeout=10)).data)
            for _ in range(count)
        ]
    finally:
        await sub.unsubscribe()


async def _at_least(broker: Broker, queue: str, count: int) -> bool:
    return await stored_count(broker, queue) >= count


def by_task(events: list[TaskEvent]) -> dict[str | None, list[TaskEvent]]:
    grouped: dict[str | None, list[TaskEvent]] = defaultdict(list)
    for event in events:
        grouped[event.task_id].append(event)
    return grouped


async def wait_state(client: Celeriac, task_id: str, state: TaskState) -> None:
    async def reached() -> bool:
        record = await client.AsyncResult(task_id).arecord()
        return record is not None and record.state is state

    await await_until(reached, timeout=30, what=f"{task_id} {state.value}")


@pytest.mark.integration
async def test_events_of_a_success_a_dead_letter_and_a_revoke(
    start_worker: StartWorker, client: Celeriac, broker: Broker, queue: str, nats_url: str
) -> None:
    name = f"ev-{uuid.uuid4().hex[:8]}"
    start_worker(queue, extra=["--events"], env={WORKER_NAME_ENV: name})
    began = datetime.now(UTC)

    added = await client.asend_task("w.add", [2, 3], queue=queue)
    assert await added.aget(timeout=30) == 5
    failing = await client.asend_task("w.fail", queue=queue)
    with pytest.raises(TaskError):
        await failing.aget(timeout=30)
    await wait_dead_letters(broker, queue, 1)
    revoked_id = f"rv-{uuid.uuid4().hex[:8]}"
    await broker.revocations.revoke(revoked_id, "not wanted")
    await client.asend_task("w.add", [1, 1], queue=queue, task_id=revoked_id)
    await wait_state(client, revoked_id, TaskState.REVOKED)

    events = await read_events(broker, queue, 3 + 10 + 2)
    assert all(e.queue == queue and e.worker == name and e.time >= began for e in events)
    tasks = by_task(events)
    assert set(tasks) == {added.id, failing.id, revoked_id}

    success = tasks[added.id]
    assert [e.type for e in success] == [R, S, OK]
    assert {(e.task, e.retries, e.error) for e in success} == {("w.add", 0, None)}
    assert [e.runtime is not None for e in success] == [False, False, True]
    assert success[0].time <= success[1].time <= success[2].time

    failure = tasks[failing.id]
    assert [e.type for e in failure] == [R, S, RETRY] * 2 + [
        R, S, EventType.DEAD_LETTERED, EventType.FAILED
    ]  # fmt: skip
    assert [e.retries for e in failure] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    for retried in (failure[2], failure[5]):
        assert (retried.error_type, retried.error) == ("ValueError", "ValueError: always broken")
        assert retried.eta is not None and retried.eta > retried.time
        assert retried.runtime is not None
    dead, failed = failure[-2:]
    assert (dead.error_type, dead.error) == (DeadLetterReason.MAX_RETRIES.value,
                                             "ValueError: always broken")  # fmt: skip
    assert (failed.error_type, failed.error) == ("ValueError", "ValueError: always broken")
    assert failed.runtime is not None and dead.runtime is None

    assert [(e.type, e.task, e.error) for e in tasks[revoked_id]] == [
        (R, "w.add", None), (EventType.REVOKED, "w.add", "not wanted")
    ]  # fmt: skip

    # The command line shows the same events, as JSON lines, from the stream's start.
    done = await celeriac(
        "events", "-Q", queue, "--since", "1h", "--limit", "15", "-o", "json", nats_url=nats_url
    )
    assert done.returncode == 0, done.stderr
    shown = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["task_id"], e["type"]) for e in shown] == [(e.task_id, e.type.value) for e in events]
    assert all(TaskEvent.model_validate(e) for e in shown)

    # Filters: by type (on the subject) and by task name (here); one line per event.
    done = await celeriac(
        "events", "-Q", queue, "--since", "1h", "--type", "retried", "--type", "failed",
        "--task", "w.fail", "--limit", "3", nats_url=nats_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and all(failing.id in line and "w.fail" in line for line in lines)
    assert [line.split()[2] for line in lines] == ["retried", "retried", "failed"]
    assert "ValueError: always broken" in lines[2]


@pytest.mark.integration
async def test_a_live_tail_starts_now(
    start_worker: StartWorker, client: Celeriac, broker: Broker, queue: str, nats_url: str
) -> None:
    start_worker(queue, extra=["--events"])
    before = await client.asend_task("w.add", [1, 2], queue=queue)
    assert await before.aget(timeout=30) == 3
    await read_events(broker, queue, 3)

    tail = asyncio.create_task(
        celeriac("events", "-Q", queue, "--limit", "2", "-o", "json", nats_url=nats_url)
    )
    # The tail's consumer (starting at new events) exists before the next task is sent.
    await await_until(lambda: _tailing(broker, queue), timeout=30, what="the tail's consumer")
    after = await client.asend_task("w.add", [2, 2], queue=queue)
    done = await asyncio.wait_for(tail, 60)
    assert done.returncode == 0, done.stderr
    shown = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["task_id"], e["type"]) for e in shown] == [
        (after.id, "received"), (after.id, "started")
    ]  # fmt: skip


async def _tailing(broker: Broker, queue: str) -> bool:
    consumers = await broker.js.consumers_info(names.EVENTS_STREAM)
    return any(
        c.config.filter_subject == names.event_filter(queue)
        and c.config.deliver_policy == DeliverPolicy.NEW
        for c in consumers
    )


@pytest.mark.integration
async def test_no_events_when_off(
    start_worker: StartWorker, client: Celeriac, broker: Broker, queue: str
) -> None:
    # The stream is there, so an event published would be kept.
    await broker.declarer.events_stream()
    start_worker(queue)
    results = [await client.asend_task("w.add", [i, i], queue=queue) for i in range(5)]
    assert [await r.aget(timeout=30) for r in results] == [0, 2, 4, 6, 8]
    failing = await client.asend_task("w.fail", queue=queue)
    with pytest.raises(TaskError):
        await failing.aget(timeout=30)
    assert await stored_count(broker, queue) == 0


@pytest.mark.integration
async def test_the_stream_limits(private_nats: Any, start_worker: StartWorker, queue: str) -> None:
    app = Celeriac("events-limits", nats_url=private_nats.url)
    try:
        broker = await app.broker()
        # Without the operator the worker declares the stream with the default limits.
        start_worker(queue, url=private_nats.url, extra=["--events"])
        info = await broker.js.stream_info(names.EVENTS_STREAM)
        assert (info.config.max_age, info.config.max_bytes) == (3600.0, 256 * MiB)
        assert info.config.subjects == ["celeriac.events.>"]

        # The operator brings an existing stream to the install's limits.
        report = QueueReport()
        settings = jetstream.EventsSettings(max_age_seconds=600, max_bytes=4 * MiB)
        await ensure_events_stream(broker.js, report, settings)
        assert report.updated == ["stream CELERIAC_EVENTS (max_age, max_bytes)"]
        info = await broker.js.stream_info(names.EVENTS_STREAM)
        assert (info.config.max_age, info.config.max_bytes) == (600.0, 4 * MiB)

        # Past its size the stream drops the oldest events, and tasks go on.
        small = jetstream.EventsSettings(max_age_seconds=600, max_bytes=4096)
        await ensure_events_stream(broker.js, QueueReport(), small)
        results = [await app.asend_task("w.add", [i, 0], queue=queue) for i in range(40)]
        assert [await r.aget(timeout=30) for r in results] == list(range(40))
        info = await broker.js.stream_info(names.EVENTS_STREAM)
        assert 0 < info.state.bytes <= 4096 and info.state.first_seq > 1
    finally:
        await app.aclose()


@pytest.mark.integration
async def test_the_operator_creates_the_stream_with_the_install_limits(private_nats: Any) -> None:
    nc = Client()
    await nc.connect(private_nats.url)
    try:
        js = nc.jetstream()
        settings = jetstream.EventsSettings(max_age_seconds=1800, max_bytes=64 * MiB)
        report = await ensure_queue(js, "evq", jetstream.QueueSettings(), events=settings)
        assert "stream CELERIAC_EVENTS" in report.created
        info = await js.stream_info(names.EVENTS_STREAM)
        assert (info.config.max_age, info.config.max_bytes) == (1800.0, 64 * MiB)
        again = await ensure_queue(js, "evq", jetstream.QueueSettings(), events=settings)
        assert not [line for line in again.created + again.updated if "EVENTS" in line]
    finally:
        await nc.close()


@pytest.mark.integration
async def test_the_missing_stream_is_one_sentence(private_nats: Any) -> None:
    done = await celeriac("events", nats_url=private_nats.url)
    assert done.returncode == 1
    assert done.stderr.startswith("celeriac: no task events: stream CELERIAC_EVENTS does not")
    assert "celeriac worker --events" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.integration
async def test_tasks_go_on_when_the_stream_is_deleted(
    private_nats: Any, start_worker: StartWorker, queue: str
) -> None:
    app = Celeriac("events-deleted", nats_url=private_nats.url)
    try:
        broker = await app.broker()
        worker = start_worker(queue, url=private_nats.url, extra=["--events"])
        first = await app.asend_task("w.add", [1, 1], queue=queue)
        assert await first.aget(timeout=30) == 2
        await broker.js.delete_stream(names.EVENTS_STREAM)
        results = [await app.asend_task("w.add", [i, 1], queue=queue) for i in range(10)]
        assert [await r.aget(timeout=30) for r in results] == list(range(1, 11))
        assert worker.process.alive()
        with pytest.raises(NotFoundError):
            await broker.js.stream_info(names.EVENTS_STREAM)
    finally:
        await app.aclose()


@pytest.mark.integration
async def test_a_failed_publish_is_counted_logged_once_and_never_raised(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    nc = Client()
    await nc.connect(nats_url)
    dropped = Count()
    events = TaskEvents(nc, "w-1", dropped)
    message = TaskMessage(id="t-1", task="w.add", queue="q")
    delivery = Delivery(_FakeMsg(), "q", 10.0, 0.0)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="celeriac.worker_runtime.events"):
        events.received(delivery, message)
        await nc.close()  # the queued event cannot go out, and no later one either
        for _ in range(3):
            events.received(delivery, message)
            events.started(delivery, message)
            events.succeeded(delivery, message, 0.01)
        await events.close()
    assert dropped.value == 10
    warnings = [r for r in caplog.records if "not published" in r.getMessage()]
    assert len(warnings) == 1


class _FakeMsg:
    """Only what ``Delivery`` reads: the ack subject of a first delivery."""

    reply = "$JS.ACK.S.C.1.7.7.0.0"


def test_the_worker_flag_and_its_environment_variable() -> None:
    argv = ["-A", "tasks"]
    assert parse_options(argv, env={}).events is False
    assert parse_options([*argv, "--events"], env={}).events is True
    assert parse_options(argv, env={"CELERIAC_EVENTS": "1"}).events is True
    assert parse_options(argv, env={"CELERIAC_EVENTS": "0"}).events is False
    with pytest.raises(OptionsError, match="CELERIAC_EVENTS"):
        parse_options(argv, env={"CELERIAC_EVENTS": "maybe"})


@pytest.mark.parametrize(
    ("error", "clipped"),
    [(None, None), ("short", "short"), ("x" * EVENT_ERROR_CHARS, "x" * EVENT_ERROR_CHARS),
     ("x" * 2000, "x" * (EVENT_ERROR_CHARS - 3) + "...")],
)  # fmt: skip
def test_errors_are_clipped(error: str | None, clipped: str | None) -> None:
    assert clip_error(error) == clipped


@pytest.mark.parametrize(
    ("queues", "types", "filters"),
    [
        ((), (), ["celeriac.events.*.*"]),
        (("q1",), (), ["celeriac.events.q1.*"]),
        ((), ("failed",), ["celeriac.events.*.failed"]),
        (("q1", "q2"), ("failed", "retried", "failed"),
         ["celeriac.events.q1.failed", "celeriac.events.q1.retried",
          "celeriac.events.q2.failed", "celeriac.events.q2.retried"]),
    ],
)  # fmt: skip
def test_subject_filters(
    queues: tuple[str, ...], types: tuple[str, ...], filters: list[str]
) -> None:
    from celeriac.admin.events import subject_filters

    assert subject_filters(queues, types) == filters


def test_one_line_per_event() -> None:
    from celeriac.admin.events import format_line

    base: dict[str, Any] = {
        "time": "2026-01-02T03:04:05.678901Z", "task_id": "t-1", "task": "w.add",
        "queue": "q", "worker": "w-1",
    }  # fmt: skip
    lines = [
        format_line(TaskEvent.model_validate({**base, **extra}))
        for extra in [
            {"type": "received"},
            {"type": "succeeded", "runtime": 0.0123},
            {"type": "retried", "runtime": 1.5, "error_type": "ValueError",
             "error": "ValueError: no", "eta": "2026-01-02T03:04:09Z"},
        ]
    ]  # fmt: skip
    assert lines == [
        "2026-01-02 03:04:05.678  received       q  w.add  t-1",
        "2026-01-02 03:04:05.678  succeeded      q  w.add  t-1  0.012s",
        "2026-01-02 03:04:05.678  retried        q  w.add  t-1  1.500s  "
        "ValueError: no  again at 03:04:09",
    ]
