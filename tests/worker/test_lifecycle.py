"""Crash recovery, graceful drain, probes and metrics of real worker processes."""

from __future__ import annotations

import os
import signal

import pytest
from nats.js.api import ConsumerConfig, StreamConfig

from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.exceptions import TaskError
from celeriac.protocol import jetstream, names
from celeriac.protocol.envelope import ResultRecord
from celeriac.protocol.states import TaskState
from tests.support import await_until

pytestmark = pytest.mark.integration


async def _declare_short_ack_wait(broker: Broker, queue: str, ack_wait: float = 2.0) -> None:
    settings = jetstream.QueueSettings(ack_wait_seconds=ack_wait)
    await broker.js.add_stream(StreamConfig(**jetstream.work_stream_config(queue, settings)))
    await broker.js.add_stream(StreamConfig(**jetstream.dead_letter_stream_config(queue, settings)))
    await broker.js.add_consumer(
        names.stream_name(queue), ConsumerConfig(**jetstream.consumer_config(queue, settings))
    )


async def _state(client: Celeriac, task_id: str, state: TaskState) -> ResultRecord:
    async def reached() -> ResultRecord | None:
        record = await client.AsyncResult(task_id).arecord()
        return record if record is not None and record.state is state else None

    return await await_until(reached, timeout=20, what=f"{task_id} to be {state}")


async def test_killed_worker_task_completes_elsewhere(
    start_worker, client: Celeriac, broker: Broker, queue: str
) -> None:
    await _declare_short_ack_wait(broker, queue)
    doomed = start_worker(queue, concurrency=1)
    result = await client.asend_task("w.sleep", [1.0], queue=queue)
    await _state(client, result.id, TaskState.STARTED)
    os.killpg(doomed.process.pid, signal.SIGKILL)
    doomed.wait_exit(10)
    start_worker(queue, concurrency=1)
    assert await result.aget(timeout=20) == 1.0
    record = await result.arecord()
    assert record is not None and record.worker and str(doomed.process.pid) not in record.worker


async def test_long_task_is_not_redelivered_while_alive(
    start_worker, client: Celeriac, broker: Broker, queue: str
) -> None:
    await _declare_short_ack_wait(broker, queue)
    start_worker(queue, concurrency=1)
    start_worker(queue, concurrency=1)
    # 4 s is twice ack_wait: only the in_progress heartbeats keep it from a second worker.
    result = await client.asend_task("w.asleep", [4.0], queue=queue)
    assert await result.aget(timeout=20) == 4.0
    info = await broker.js.consumer_info(names.stream_name(queue), names.CONSUMER_NAME)
    assert info.num_redelivered == 0


async def test_sigterm_lets_the_running_task_finish(
    start_worker, client: Celeriac, queue: str
) -> None:
    worker = start_worker(queue, concurrency=1, extra=("--drain-timeout", "15"))
    result = await client.asend_task("w.asleep", [2.0], queue=queue)
    await _state(client, result.id, TaskState.STARTED)
    worker.signal(signal.SIGTERM)
    await await_until(
        lambda: worker.get("/readyz")[0] == 503 or not worker.process.alive(),
        timeout=5,
        what="readiness to drop",
    )
    assert worker.wait_exit(20) == 0
    record = await result.arecord()
    assert record is not None and record.state is TaskState.SUCCESS


async def test_drain_timeout_naks_for_immediate_redelivery(
    start_worker, client: Celeriac, queue: str
) -> None:
    # Default ack_wait (30 s): a redelivery within seconds can only come from the NAK.
    first = start_worker(queue, concurrency=1, extra=("--drain-timeout", "0.5"))
    result = await client.asend_task("w.asleep", [3.0], queue=queue)
    await _state(client, result.id, TaskState.STARTED)
    first.signal(signal.SIGTERM)
    assert first.wait_exit(15) == 0
    start_worker(queue, concurrency=1)
    assert await result.aget(timeout=15) == 3.0


async def test_second_signal_exits_at_once(start_worker, client: Celeriac, queue: str) -> None:
    worker = start_worker(queue, concurrency=1, extra=("--drain-timeout", "60"))
    result = await client.asend_task("w.asleep", [60.0], queue=queue)
    await _state(client, result.id, TaskState.STARTED)
    worker.signal(signal.SIGINT)
    await await_until(lambda: worker.get("/readyz")[0] == 503, timeout=5, what="draining")
    worker.signal(signal.SIGINT)
    assert worker.wait_exit(10) == 1
    assert "NAKing" in worker.log()
    # NAKed, not left to the 30 s ack_wait: a new worker starts it again at once.
    start_worker(queue, concurrency=1, extra=("--drain-timeout", "0.5"))

    async def restarted() -> bool:
        record = await result.arecord()
        return record is not None and record.state is TaskState.STARTED and record.retries == 1

    await await_until(restarted, timeout=10, what="the task to be redelivered")


async def test_health_and_metrics(start_worker, client: Celeriac, queue: str) -> None:
    worker = start_worker(queue)
    assert worker.get("/healthz") == (200, "ok: nats connected\n")
    status, body = worker.get("/readyz")
    assert status == 200 and queue in body
    for _ in range(3):
        await (await client.asend_task("w.add", [1, 2], queue=queue)).aget(timeout=15)
    fail = await client.asend_task("w.not_json", queue=queue)
    with pytest.raises(TaskError):
        await fail.aget(timeout=15)
    labels = f'queue="{queue}",task="w.add"'
    failed = f'queue="{queue}",task="w.not_json"'

    async def settled() -> str | None:
        status, text = worker.get("/metrics")
        assert status == 200
        return text if f"celeriac_worker_tasks_failed_total{{{failed}}} 1.0" in text else None

    metrics = await await_until(settled, timeout=5, what="the failure to be counted")
    assert f"celeriac_worker_tasks_received_total{{{labels}}} 3.0" in metrics
    assert f"celeriac_worker_tasks_succeeded_total{{{labels}}} 3.0" in metrics
    assert f"celeriac_worker_tasks_dead_lettered_total{{{failed}}} 1.0" in metrics
    assert f"celeriac_worker_task_duration_seconds_count{{{labels}}} 3.0" in metrics
    assert "celeriac_worker_tasks_in_flight 0.0" in metrics


async def test_not_ready_until_the_operator_creates_the_queue(
    start_worker, client: Celeriac, queue: str
) -> None:
    worker = start_worker(queue, env={"CELERIAC_DECLARE_QUEUES": "0"}, wait=False)
    await await_until(
        lambda: "does not exist" in worker.log(), timeout=20, what="the missing-queue log"
    )
    status, body = worker.get("/readyz")
    assert status == 503 and queue in body
    assert worker.get("/healthz")[0] == 200
    # Creating the queue later (as the operator would) makes the worker ready.
    result = await client.asend_task("w.add", [20, 22], queue=queue)
    worker.wait_ready(30)
    assert await result.aget(timeout=15) == 42


async def test_waits_for_nats_and_stops_cleanly_meanwhile(start_worker, queue: str) -> None:
    # Nothing listens on port 1: the worker keeps trying, alive but not ready.
    worker = start_worker(queue, url="nats://127.0.0.1:1", wait=False)
    await await_until(lambda: worker.get("/readyz")[0] == 503, timeout=20, what="the health server")
    assert worker.get("/healthz")[0] == 200
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(10) == 0
