"""The in-memory NATS and its worker: tasks wait until the test runs them."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac, TaskError, group
from celeriac.dlq import ReplayOutcome, list_dead_letters, replay
from celeriac.exceptions import TaskRevokedError
from celeriac.protocol.envelope import DeadLetterReason
from celeriac.protocol.states import TaskState
from celeriac.testing import MemoryWorker, memory

ROOT = Path(__file__).resolve().parents[2]
app = Celeriac("memory-tests", default_queue="orders")
# Whether the payment service is up, as the tasks below see it (reset per test).
service = {"up": True, "runs": 0}


class UnavailableError(ConnectionError):
    """The payment service did not answer."""


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task(queue="emails")
def send_email(to: str) -> str:
    return f"sent to {to}"


@app.task(autoretry_for=(UnavailableError,), max_retries=2, retry_backoff=30)
def charge(amount: int) -> str:
    service["runs"] += 1
    if not service["up"]:
        raise UnavailableError("payments are down")
    return f"charged {amount}"


@app.task(webhook="https://shop.example.com/hooks/celeriac")
def notify(order_id: int) -> int:
    return order_id


@app.task
async def wait_for_ever(started: str) -> None:
    await asyncio.Event().wait()


@pytest.fixture(autouse=True)
def service_up() -> None:
    service.update(up=True, runs=0)


@pytest.fixture
def worker() -> Iterator[MemoryWorker]:
    with memory(app) as running:
        yield running


def test_nothing_runs_until_the_worker_is_run(worker: MemoryWorker) -> None:
    result = add.delay(2, 3)
    assert result.state is TaskState.PENDING
    (queued,) = worker.tasks("orders")
    assert (queued.task, queued.args, queued.id) == (add.name, [2, 3], result.id)
    assert worker.run_until_idle() == 1
    assert result.get(timeout=1) == 5
    assert worker.tasks() == []
    assert worker.run_until_idle() == 0


def test_a_task_id_submitted_twice_is_enqueued_once(worker: MemoryWorker) -> None:
    add.apply_async((1, 1), task_id="order-1")
    add.apply_async((1, 1), task_id="order-1")
    assert len(worker.tasks()) == 1


def test_a_worker_for_some_queues_leaves_the_others(worker: MemoryWorker) -> None:
    total, email = add.delay(1, 2), send_email.delay("ada@example.com")
    assert worker.run_until_idle("emails") == 1
    assert email.get(timeout=1) == "sent to ada@example.com"
    assert total.state is TaskState.PENDING
    assert [t.task for t in worker.tasks()] == [add.name]


def test_countdown_waits_unless_delays_are_skipped(worker: MemoryWorker) -> None:
    result = add.apply_async((1, 2), countdown=3600)
    assert worker.run_until_idle(skip_delays=False) == 0
    (waiting,) = worker.tasks()
    assert waiting.eta is not None
    assert worker.run_until_idle() == 1
    assert result.get(timeout=1) == 3


def test_a_retry_waits_its_backoff_unless_delays_are_skipped(worker: MemoryWorker) -> None:
    service["up"] = False
    result = charge.delay(100)
    assert worker.run_until_idle(skip_delays=False) == 1
    assert result.state is TaskState.RETRY
    assert worker.count("retried", charge.name) == 1
    service["up"] = True
    assert worker.run_until_idle() == 1
    assert result.get(timeout=1) == "charged 100"
    assert service["runs"] == 2


def test_exhausted_retries_end_in_the_dead_letter_queue_and_replay(worker: MemoryWorker) -> None:
    service["up"] = False
    result = charge.delay(250)
    worker.run_until_idle()
    assert service["runs"] == 3
    with pytest.raises(TaskError, match="payments are down"):
        result.get(timeout=1)
    (letter,) = worker.dead_letters("orders")
    assert (letter.reason, letter.task_id, letter.deliveries) == (
        DeadLetterReason.MAX_RETRIES,
        result.id,
        3,
    )
    assert worker.count("dead_lettered") == 1

    # The dead-letter API (what `celeriac dlq replay` runs) works on the in-memory NATS.
    async def replay_all() -> list[Any]:
        js = (await app.broker()).js
        return await replay(js, await list_dead_letters(js, "orders"))

    service["up"] = True
    (replayed,) = app.client.run_sync(replay_all, call="replay", twin="replay")
    assert replayed.outcome is ReplayOutcome.REPLAYED
    assert worker.dead_letters() == []
    worker.run_until_idle()
    # A fresh handle: ``result`` keeps the final state it has seen, as any result does.
    assert app.AsyncResult(result.id).get(timeout=1) == "charged 250"


def test_revoked_while_queued_is_skipped(worker: MemoryWorker) -> None:
    result = add.delay(1, 2)
    result.revoke()
    assert result.state is TaskState.REVOKED
    assert worker.run_until_idle() == 1
    with pytest.raises(TaskRevokedError):
        result.get(timeout=1)
    assert worker.count("revoked") == 1
    assert worker.count("succeeded") == 0


def test_expired_while_queued_is_skipped(worker: MemoryWorker) -> None:
    result = add.apply_async((1, 2), expires=datetime.now(UTC) - timedelta(seconds=1))
    worker.run_until_idle()
    with pytest.raises(TaskRevokedError, match="expired"):
        result.get(timeout=1)


def test_a_task_with_a_webhook_leaves_a_delivery_job(worker: MemoryWorker) -> None:
    notify.delay(7)
    worker.run_until_idle()
    (job,) = worker.server.stream("CELERIAC_WEBHOOKS").messages.values()
    assert job.subject == "celeriac.webhooks.orders"
    assert b"task.succeeded" in job.data


async def test_revoke_with_terminate_stops_a_running_async_task() -> None:
    with memory(app) as worker:
        result = await wait_for_ever.adelay("x")
        running = asyncio.ensure_future(worker.arun_until_idle())
        for _ in range(500):  # until it is running (STARTED is stored after 50 ms)
            if await result.astate() is TaskState.STARTED:
                break
            await asyncio.sleep(0.01)
        assert await result.astate() is TaskState.STARTED
        await result.arevoke(terminate=True)
        assert await asyncio.wait_for(running, 10) == 1
        with pytest.raises(TaskRevokedError, match="terminated"):
            await result.aget(timeout=1)


async def test_a_waiting_get_sees_the_result_when_the_worker_stores_it() -> None:
    with memory(app) as worker:
        result = await add.adelay(40, 2)
        waiting = asyncio.ensure_future(result.aget(timeout=10))
        await asyncio.sleep(0)  # the wait has begun: it watches the result's key
        assert not waiting.done()
        assert await worker.arun_until_idle() == 1
        assert await waiting == 42


def test_group_members_wait_then_run(worker: MemoryWorker) -> None:
    result = group(add.s(i, i) for i in range(3)).delay()
    assert len(worker.tasks()) == 3
    worker.run_until_idle()
    assert result.get(timeout=1) == [0, 2, 4]


def test_signed_messages_are_checked_by_the_worker() -> None:
    secret = base64.b64encode(b"k" * 32).decode()
    signed = Celeriac("memory-signed", default_queue="orders", signing_keys=f"k1:{secret}")
    signed.task(name=add.name)(add.fn)
    with memory(signed) as worker:
        good = signed.send_task(add.name, [1, 2])
        worker.run_until_idle()
        assert good.get(timeout=1) == 3
        # Another producer, without the keys, sends an unsigned task.
        worker.server.publish(
            "celeriac.tasks.orders", b'{"v":1,"id":"forged","task":"' + add.name.encode() + b'"}',
            {"Nats-Msg-Id": "forged"},
        )  # fmt: skip
        worker.run_until_idle()
        (letter,) = worker.dead_letters("orders")
        assert letter.reason is DeadLetterReason.UNSIGNED
        assert worker.result("forged") is None


SCRIPT = """
from celeriac import Celeriac
from celeriac.testing import eager, memory

app = Celeriac("exit-test")


@app.task
def add(a, b):
    return a + b


@app.task
def outer(a):
    return add.delay(a, 1).id


with eager(app):
    assert outer.delay(1).get()
with memory(app) as worker:
    result = outer.delay(2)
    worker.run_until_idle()
    assert result.get(timeout=5)
print("ok")
"""


def test_leaving_the_block_closes_what_the_worker_opened(tmp_path: Path) -> None:
    # A connection left open keeps a publish timer pending when its loop goes away,
    # which asyncio reports at exit ("Task was destroyed but it is pending").
    script = tmp_path / "leave.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, "-X", "dev", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert "destroyed" not in done.stderr and "never awaited" not in done.stderr, done.stderr
