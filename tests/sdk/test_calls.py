"""Each SDK call, blocking and async, against the real nats-server (no worker needed)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.aio.client import Client

from celeriac.app import Celeriac
from celeriac.exceptions import (
    QueueNotFoundError,
    ResultTimeoutError,
    SyncCallInEventLoopError,
    TaskError,
    TaskRevokedError,
)
from celeriac.protocol import names
from celeriac.protocol.envelope import ResultRecord, TaskMessage
from celeriac.protocol.states import TaskState

pytestmark = pytest.mark.integration


async def pull(nc: Client, queue: str, count: int) -> list[TaskMessage]:
    """Take ``count`` messages off the queue with a raw pull consumer and ack them."""
    sub = await nc.jetstream().pull_subscribe_bind(names.CONSUMER_NAME, names.stream_name(queue))
    out: list[TaskMessage] = []
    while len(out) < count:
        for msg in await sub.fetch(count - len(out), timeout=5):
            out.append(TaskMessage.model_validate_json(msg.data))
            await msg.ack()
    await sub.unsubscribe()
    return out


async def stored(nc: Client, queue: str) -> int:
    return int((await nc.jetstream().stream_info(names.stream_name(queue))).state.messages)


def register(app: Celeriac) -> Any:
    @app.task(name="calls.add")
    def add(a: int, b: int) -> int:
        return a + b

    return add


async def test_delay_and_apply_async_sync(app: Celeriac, queue: str, raw_nc: Client) -> None:
    add = register(app)
    r1 = await asyncio.to_thread(add.delay, 2, 3)
    r2 = await asyncio.to_thread(
        lambda: add.apply_async((4,), {"b": 5}, task_id="my-id", headers={"traceparent": "00-x"})
    )
    r3 = await asyncio.to_thread(lambda: app.send_task("calls.add", [7, 8], expires=60))
    assert r2.id == "my-id"
    got = {m.id: m for m in await pull(raw_nc, queue, 3)}
    assert got[r1.id].args == [2, 3] and got[r1.id].task == "calls.add"
    assert got["my-id"].kwargs == {"b": 5} and got["my-id"].headers == {"traceparent": "00-x"}
    expires = got[r3.id].expires
    assert expires is not None and expires > datetime.now(UTC)
    assert {m.queue for m in got.values()} == {queue}


async def test_async_twins(aapp: Celeriac, queue: str, raw_nc: Client) -> None:
    add = register(aapp)
    r1 = await add.adelay(1, 2)
    r2 = await add.aapply_async((3, 4), task_id="async-id")
    r3 = await aapp.asend_task("calls.add", (5, 6))
    results = await aapp.asend_many([add.s(i, i) for i in range(3)])
    got = {m.id: m.args for m in await pull(raw_nc, queue, 6)}
    assert got[r1.id] == [1, 2] and got["async-id"] == [3, 4] and got[r3.id] == [5, 6]
    assert [got[r.id] for r in results] == [[0, 0], [1, 1], [2, 2]]
    assert r2.id == "async-id"


def test_send_task_from_plain_thread(app: Celeriac) -> None:
    """A Flask-style view: blocking code on a thread with no event loop."""
    add = register(app)
    ids: list[str] = []
    errors: list[BaseException] = []

    def view() -> None:
        try:
            ids.append(add.delay(1, 1).id)
            ids.append(app.send_task("calls.add", (2, 2)).id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=view) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(set(ids)) == 8


async def test_sync_call_inside_loop_errors_clearly(aapp: Celeriac) -> None:
    add = register(aapp)
    with pytest.raises(SyncCallInEventLoopError, match=r"use `await calls\.add\.adelay\(\)`"):
        add.delay(1, 2)
    with pytest.raises(SyncCallInEventLoopError, match="asend_task"):
        aapp.send_task("calls.add", (1, 2))
    result = await add.adelay(1, 2)
    with pytest.raises(SyncCallInEventLoopError, match="aget"):
        result.get(timeout=1)
    with pytest.raises(SyncCallInEventLoopError, match="arevoke"):
        result.revoke()
    with pytest.raises(SyncCallInEventLoopError, match="astate"):
        _ = result.state


def test_get_with_timeout_names_the_id(app: Celeriac) -> None:
    add = register(app)
    result = add.delay(1, 2)
    assert result.state is TaskState.PENDING
    with pytest.raises(ResultTimeoutError, match=result.id) as info:
        result.get(timeout=0.3)
    assert isinstance(info.value, TimeoutError)


def _put(app: Celeriac, task_id: str, record: ResultRecord) -> None:
    async def go() -> None:
        await (await app.broker()).results.put(task_id, record)

    app.client.run_sync(go, call="test", twin="test")


def test_get_returns_when_the_result_arrives(app: Celeriac) -> None:
    add = register(app)
    result = add.delay(1, 2)
    timer = threading.Timer(
        0.3, _put, (app, result.id, ResultRecord(state=TaskState.SUCCESS, result=3))
    )
    timer.start()
    try:
        assert result.get(timeout=10) == 3
    finally:
        timer.join()
    assert result.successful() and result.ready() and not result.failed()
    assert result.result == 3


def test_failure_propagates(app: Celeriac) -> None:
    result = app.AsyncResult("failing-task")
    record = ResultRecord(
        state=TaskState.FAILURE, error="boom", exc_type="ValueError", traceback="Traceback..."
    )
    _put(app, result.id, record)
    with pytest.raises(TaskError, match="ValueError: boom") as info:
        result.get(timeout=5)
    assert info.value.traceback == "Traceback..."
    assert isinstance(result.get(timeout=5, propagate=False), TaskError)
    assert result.failed() and result.traceback == "Traceback..."


async def test_aget_and_states(aapp: Celeriac) -> None:
    result = aapp.AsyncResult("aget-task")
    broker = await aapp.broker()
    assert await result.astate() is TaskState.PENDING
    await broker.results.put(result.id, ResultRecord(state=TaskState.STARTED))
    assert await result.astate() is TaskState.STARTED
    waiter = asyncio.create_task(result.aget(timeout=10))
    await broker.results.put(result.id, ResultRecord(state=TaskState.RETRY, error="x"))
    await broker.results.put(result.id, ResultRecord(state=TaskState.SUCCESS, result={"k": 1}))
    assert await waiter == {"k": 1}
    with pytest.raises(ResultTimeoutError):
        await aapp.AsyncResult("never").aget(timeout=0.2)


def test_revoke_is_stored_durably(app: Celeriac, nats_url: str) -> None:
    add = register(app)
    result = add.apply_async((1, 2), countdown=60)
    result.revoke()
    assert result.state is TaskState.REVOKED
    with pytest.raises(TaskRevokedError, match=result.id):
        result.get(timeout=5)
    # Another app (another process, a worker started later) sees the revocation.
    other = Celeriac("other", nats_url)
    try:

        async def reason() -> str | None:
            return await (await other.broker()).revocations.reason(result.id)

        assert other.client.run_sync(reason, call="t", twin="t") == "revoked"
    finally:
        other.close()


def test_revoke_keeps_a_started_state(app: Celeriac) -> None:
    result = app.AsyncResult("started-then-revoked")
    _put(app, result.id, ResultRecord(state=TaskState.STARTED))
    result.revoke("stop it")
    assert result.state is TaskState.STARTED  # the worker reports the final state


async def test_dedup_by_task_id(aapp: Celeriac, queue: str, raw_nc: Client) -> None:
    add = register(aapp)
    await add.aapply_async((1, 2), task_id="same-id")
    await add.aapply_async((1, 2), task_id="same-id")
    await aapp.asend_many([add.s(1, 2).set(task_id="same-id"), add.s(3, 4).set(task_id="other")])
    assert await stored(raw_nc, queue) == 2


def test_queue_is_declared_with_defaults(app: Celeriac, queue: str) -> None:
    add = register(app)
    add.delay(1, 2)

    async def info() -> tuple[Any, Any, Any]:
        js = (await app.broker()).js
        return (
            await js.stream_info(names.stream_name(queue)),
            await js.stream_info(names.dead_letter_stream_name(queue)),
            await js.consumer_info(names.stream_name(queue), names.CONSUMER_NAME),
        )

    work, dlq, consumer = app.client.run_sync(info, call="t", twin="t")
    assert work.config.allow_msg_schedules
    assert dlq.config.subjects == [names.dead_letter_subject(queue)]
    assert consumer.config.filter_subject == names.task_subject(queue)


def test_missing_queue_without_declaring_is_a_clear_error(nats_url: str, queue: str) -> None:
    app = Celeriac("no-declare", nats_url, default_queue=queue, declare_queues=False)
    try:
        with pytest.raises(QueueNotFoundError, match=queue):
            app.send_task("x.y", (1,))
    finally:
        app.close()


def test_bad_input_raises_before_sending(app: Celeriac) -> None:
    add = register(app)
    with pytest.raises(TypeError, match=r"argument 'b' of calls\.add"):
        add.delay(1, b={1, 2})
    with pytest.raises(ValueError, match="invalid queue name"):
        add.apply_async((1, 2), queue="UPPER")
    with pytest.raises(ValueError, match="invalid task id"):
        add.apply_async((1, 2), task_id="a b")


def test_close_then_reuse(app: Celeriac) -> None:
    add = register(app)
    add.delay(1, 2)
    app.close()
    assert add.delay(3, 4).id  # blocking calls restart the background loop


async def test_send_many_pipelines_a_large_batch(
    aapp: Celeriac, queue: str, raw_nc: Client
) -> None:
    add = register(aapp)
    results = await aapp.asend_many([add.s(i, 1) for i in range(500)])
    assert len({r.id for r in results}) == 500
    assert await stored(raw_nc, queue) == 500


def test_send_many_blocking(app: Celeriac, queue: str) -> None:
    add = register(app)
    results = app.send_many([add.s(i, 1) for i in range(50)] + [add.s(0, 0).set(countdown=30)])
    assert len(results) == 51

    async def count() -> int:
        return await stored((await app.broker()).nc, queue)

    assert (
        app.client.run_sync(count, call="t", twin="t") == 51
    )  # the delayed one waits as a schedule


def test_task_error_names_the_exception_type_once() -> None:
    from celeriac.exceptions import TaskError

    expected = "task t1 failed: ValueError: bad"
    assert str(TaskError("t1", "ValueError", "ValueError: bad")) == expected
    assert str(TaskError("t1", "ValueError", "bad")) == expected
    assert str(TaskError("t1", None, "gone")) == "task t1 failed: Error: gone"
