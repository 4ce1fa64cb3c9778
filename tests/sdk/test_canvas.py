"""Canvas submission shape, and the continuation calls a worker makes after each task.

The worker is played by a raw pull consumer here: it takes messages off the queue and
calls the worker runtime's ``Continuation.on_success`` / ``on_failure`` as a worker does.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.aio.client import Client

from celeriac.app import Celeriac
from celeriac.async_result import AsyncResult, GroupResult
from celeriac.canvas import chain, chord, group
from celeriac.protocol import names
from celeriac.protocol.envelope import ResultRecord, TaskMessage
from celeriac.protocol.states import TaskState
from celeriac.worker_runtime.continuation import Continuation

pytestmark = pytest.mark.integration


async def take(nc: Client, queue: str, count: int) -> list[TaskMessage]:
    sub = await nc.jetstream().pull_subscribe_bind(names.CONSUMER_NAME, names.stream_name(queue))
    out: list[TaskMessage] = []
    while len(out) < count:
        for msg in await sub.fetch(count - len(out), timeout=5):
            out.append(TaskMessage.model_validate_json(msg.data))
            await msg.ack_sync()  # acked before the stream is inspected
    await sub.unsubscribe()
    return out


def tasks(app: Celeriac) -> tuple[Any, Any]:
    @app.task(name="cv.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="cv.total")
    def total(values: list[int]) -> int:
        return sum(values)

    return add, total


async def test_chain_shape_and_continuation(aapp: Celeriac, queue: str, raw_nc: Client) -> None:
    add, _ = tasks(aapp)
    result = await (add.s(1, 2) | add.s(10) | add.si(100, 200)).adelay()
    assert isinstance(result, AsyncResult) and isinstance(result.parent, AsyncResult)
    first = (await take(raw_nc, queue, 1))[0]
    assert first.args == [1, 2] and len(first.chain) == 2
    assert first.root_id is None and result.parent.parent is not None
    assert first.id == result.parent.parent.id
    after = Continuation(await aapp.broker())

    await after.on_success(first, 3)
    await after.on_success(first, 3)  # a redelivery publishes nothing new
    second = (await take(raw_nc, queue, 1))[0]
    assert second.args == [3, 10] and second.id == result.parent.id
    assert (second.parent_id, second.root_id) == (first.id, first.id)
    assert len(second.chain) == 1

    await after.on_success(second, 13)
    third = (await take(raw_nc, queue, 1))[0]
    assert third.args == [100, 200] and third.id == result.id  # immutable: no parent result
    assert third.chain == [] and third.root_id == first.id
    info = await raw_nc.jetstream().stream_info(names.stream_name(queue))
    assert info.state.messages == 0


async def test_chain_failure_fails_the_rest(aapp: Celeriac, queue: str, raw_nc: Client) -> None:
    add, _ = tasks(aapp)
    result = await chain(add.s(1, 2), add.s(3), add.s(4)).aapply_async()
    first = (await take(raw_nc, queue, 1))[0]
    record = ResultRecord(state=TaskState.FAILURE, error="ValueError: bad", exc_type="ValueError")
    await Continuation(await aapp.broker()).on_failure(first, record)
    for handle in (result, result.parent):
        assert isinstance(handle, AsyncResult)
        assert await handle.astate() is TaskState.FAILURE
    stored = await result.arecord()
    assert stored is not None and first.id in (stored.error or "")


async def test_group_shape(aapp: Celeriac, queue: str, raw_nc: Client) -> None:
    add, _ = tasks(aapp)
    result = await group(add.s(i, i) for i in range(5)).aapply_async()
    assert isinstance(result, GroupResult) and len(result.results) == 5
    messages = sorted(await take(raw_nc, queue, 5), key=lambda m: m.group_index or 0)
    assert [m.id for m in messages] == [r.id for r in result.results]
    assert {m.group_id for m in messages} == {result.id}
    assert [m.args for m in messages] == [[i, i] for i in range(5)]
    restored = await GroupResult.arestore(result.id, aapp.client)
    assert restored is not None and [r.id for r in restored.results] == [r.id for r in result]
    broker = await aapp.broker()
    for m in messages:
        record = ResultRecord(state=TaskState.SUCCESS, result=sum(m.args))
        await broker.results.put(m.id, record)
    assert await result.aget(timeout=5) == [0, 2, 4, 6, 8]


def test_group_result_blocking(app: Celeriac) -> None:
    add, _ = tasks(app)
    result = group([add.s(1, 1), add.s(2, 2)]).delay()
    assert isinstance(result, GroupResult)
    assert not result.ready() and result.completed_count() == 0

    async def finish() -> None:
        broker = await app.broker()
        await broker.results.put(
            result.results[0].id, ResultRecord(state=TaskState.SUCCESS, result=2)
        )
        await broker.results.put(
            result.results[1].id, ResultRecord(state=TaskState.SUCCESS, result=4)
        )

    app.client.run_sync(finish, call="t", twin="t")
    assert result.ready() and result.completed_count() == 2 and result.successful()
    assert result.get(timeout=5) == [2, 4]


async def test_chord_callback_exactly_once(aapp: Celeriac, queue: str, raw_nc: Client) -> None:
    """Members finish concurrently, some twice (redelivered): one callback, results in order."""
    add, total = tasks(aapp)
    size = 8
    result = await chord([add.s(i, i) for i in range(size)], total.s()).aapply_async()
    assert isinstance(result.parent, GroupResult)
    members = await take(raw_nc, queue, size)
    assert all(m.chord is not None and m.chord.id == result.id for m in members)
    after = Continuation(await aapp.broker())
    calls = [after.on_success(m, sum(m.args)) for m in members]
    calls += [after.on_success(m, sum(m.args)) for m in members[:4]]  # redeliveries
    await asyncio.gather(*calls)
    callback = (await take(raw_nc, queue, 1))[0]
    assert callback.id == result.id and callback.task == "cv.total"
    assert callback.args == [[2 * i for i in range(size)]]
    for m in members:  # a late redelivery after settling does nothing
        await after.on_success(m, sum(m.args))
    info = await raw_nc.jetstream().stream_info(names.stream_name(queue))
    assert info.state.messages == 0


async def test_chord_member_failure(aapp: Celeriac, queue: str, raw_nc: Client) -> None:
    add, total = tasks(aapp)
    result = await chord(group(add.s(1, 1), add.s(2, 2)), total.s()).aapply_async()
    first, second = sorted(await take(raw_nc, queue, 2), key=lambda m: m.group_index or 0)
    after = Continuation(await aapp.broker())
    await after.on_success(first, 2)
    record = ResultRecord(state=TaskState.FAILURE, error="KeyError: 'x'", exc_type="KeyError")
    await after.on_failure(second, record)
    await after.on_failure(second, record)
    stored = await result.arecord()
    assert stored is not None and stored.state is TaskState.FAILURE
    assert second.id in (stored.error or "") and stored.exc_type == "KeyError"
    info = await raw_nc.jetstream().stream_info(names.stream_name(queue))
    assert info.state.messages == 0  # the callback was never published


async def test_send_many_mixes_canvas(aapp: Celeriac, queue: str, raw_nc: Client) -> None:
    add, _ = tasks(aapp)
    results = await aapp.asend_many(
        [add.s(1, 2), add.s(1) | add.s(2), group(add.s(0, 0), add.s(0, 1))]
    )
    assert isinstance(results[0], AsyncResult) and isinstance(results[2], GroupResult)
    assert len(await take(raw_nc, queue, 4)) == 4


def test_something_else_than_a_canvas_is_refused_clearly(app: Celeriac) -> None:
    add, _ = tasks(app)
    with pytest.raises(TypeError, match=r"task signatures .* 42 is not one"):
        group(add.s(1, 1), 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"task signatures .* 'x' is not one"):
        chain(add.s(1, 1), "x")  # type: ignore[arg-type]
