"""The workers bucket: a worker announces itself, keeps its counts fresh, and goes away.

A worker stopped with SIGTERM deletes its record; one killed with SIGKILL leaves it to
the bucket's age limit (three missed heartbeats).
"""

from __future__ import annotations

import os
import signal
import uuid

import pytest
from nats.js.errors import KeyNotFoundError

from celeriac import __version__
from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.exceptions import TaskError
from celeriac.protocol import names
from celeriac.protocol.workers import (
    WORKER_NAME_ENV,
    WORKERS_TTL_SECONDS,
    ActiveTask,
    WorkerRecord,
)
from tests.support import StartWorker, await_until

pytestmark = pytest.mark.integration


async def record_of(broker: Broker, name: str) -> WorkerRecord | None:
    kv = await broker.js.key_value(names.WORKERS_BUCKET)
    try:
        entry = await kv.get(name)
    except KeyNotFoundError:
        return None
    return WorkerRecord.model_validate_json(entry.value or b"")


async def wait_record(broker: Broker, name: str, what: str, check=lambda r: True) -> WorkerRecord:
    async def found() -> WorkerRecord | None:
        record = await record_of(broker, name)
        return record if record is not None and check(record) else None

    return await await_until(found, timeout=30, what=what)


async def test_a_worker_announces_itself_counts_its_tasks_and_leaves(
    start_worker: StartWorker, client: Celeriac, broker: Broker, queue: str
) -> None:
    name = f"pod-{uuid.uuid4().hex[:8]}"
    worker = start_worker(queue, concurrency=3, env={WORKER_NAME_ENV: name})
    record = await wait_record(broker, name, "the worker's record")
    assert record.name == name and record.pid == worker.process.pid
    assert (record.queues, record.pool, record.concurrency) == ([queue], "asyncio", 3)
    assert record.version == __version__ and record.state == "running"
    assert record.started <= record.seen

    results = [await client.asend_task("w.add", [i, i], queue=queue) for i in range(3)]
    assert [await r.aget(timeout=20) for r in results] == [0, 2, 4]
    failing = await client.asend_task("w.fail", queue=queue)
    with pytest.raises(TaskError):
        await failing.aget(timeout=30)
    record = await wait_record(
        broker, name, "the counts in the record",
        lambda r: (r.succeeded, r.failed, r.retried) == (3, 1, 2),
    )  # fmt: skip
    assert record.processed == 4 and record.running == 0

    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(30) == 0
    assert await record_of(broker, name) is None  # deleted on the way out


async def test_a_killed_workers_record_expires(
    start_worker: StartWorker, broker: Broker, queue: str
) -> None:
    name = f"pod-{uuid.uuid4().hex[:8]}"
    worker = start_worker(queue, env={WORKER_NAME_ENV: name})
    await wait_record(broker, name, "the worker's record")
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.wait_exit(10)

    async def gone() -> bool:
        return await record_of(broker, name) is None

    await await_until(gone, timeout=WORKERS_TTL_SECONDS + 30, what="the record to expire")


def test_a_record_without_the_task_lists_still_reads() -> None:
    # What workers wrote before records listed their tasks: the lists default to empty.
    older = (
        b'{"v":1,"name":"pod-a","hostname":"h","pid":7,"version":"0.1.0","queues":["q"],'
        b'"pool":"asyncio","concurrency":2,"running":1,"succeeded":0,"failed":0,"retried":0,'
        b'"state":"running","started":"2026-01-01T00:00:00Z","seen":"2026-01-01T00:00:10Z"}'
    )
    record = WorkerRecord.model_validate_json(older)
    assert (record.running, record.active, record.registered) == (1, [], [])
    again = WorkerRecord.model_validate_json(
        record.model_copy(
            update={"active": [ActiveTask(id="t", task="x.y", queue="q", started=record.seen)],
                    "registered": ["x.y"]}
        ).dumps()
    )  # fmt: skip
    assert again.active[0].id == "t" and again.active[0].started == record.seen
    assert again.registered == ["x.y"]
