"""A worker subprocess runs sync and async tasks and stores their results."""

from __future__ import annotations

import itertools
import json
from unittest.mock import ANY

import pytest

from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.protocol import names
from celeriac.protocol.envelope import ResultRecord
from celeriac.protocol.states import TaskState
from tests.support import Worker, await_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("pool", ["asyncio", "threads"])
async def test_sync_and_async_tasks(start_worker, client: Celeriac, queue: str, pool: str) -> None:
    start_worker(queue, pool=pool)
    sync = await client.asend_task("w.add", [2, 3], queue=queue)
    coro = await client.asend_task("w.aadd", [4, 5], queue=queue)
    assert await sync.aget(timeout=15) == 5
    assert await coro.aget(timeout=15) == 9
    record = await sync.arecord()
    assert record is not None and record.state is TaskState.SUCCESS
    assert record.task == "w.add" and record.worker


async def test_tasks_submit_tasks(start_worker, client: Celeriac, queue: str) -> None:
    start_worker(queue)
    sync_parent = await client.asend_task("w.submit", [10], queue=queue)
    async_parent = await client.asend_task("w.asubmit", [20], queue=queue)
    sync_child = client.AsyncResult(await sync_parent.aget(timeout=15))
    async_child = client.AsyncResult(await async_parent.aget(timeout=15))
    assert await sync_child.aget(timeout=15) == 11
    assert await async_child.aget(timeout=15) == 21


@pytest.mark.parametrize(
    ("pool", "task"),
    [("asyncio", "w.spawn"), ("threads", "w.spawn"), ("processes", "w.spawn"),
     ("asyncio", "w.aspawn")],
)  # fmt: skip
async def test_a_task_a_task_submits_is_its_child(
    start_worker, client: Celeriac, queue: str, pool: str, task: str
) -> None:
    """Submitted from a task's code, a task gets that task as its parent and its root as
    the workflow's root, generation after generation; a task sent from outside has none."""
    start_worker(queue, pool=pool, concurrency=2)
    top = await client.asend_task(task, [2], queue=queue)
    generations = [await top.aget(timeout=30)]
    while (child := generations[-1]["child"]) is not None:
        generations.append(await client.AsyncResult(child).aget(timeout=30))
    assert len(generations) == 3
    assert generations[0] == {"id": top.id, "parent": None, "root": None, "child": ANY}
    for parent, child in itertools.pairwise(generations):
        assert (child["id"], child["parent"], child["root"]) == (
            parent["child"],
            parent["id"],
            top.id,
        )


async def test_non_json_result_fails_clearly(start_worker, client: Celeriac, queue: str) -> None:
    start_worker(queue)
    result = await client.asend_task("w.not_json", queue=queue)
    with pytest.raises(Exception, match="not JSON-serializable"):
        await result.aget(timeout=15)


async def test_logs_name_the_task_id(start_worker, client: Celeriac, queue: str) -> None:
    worker: Worker = start_worker(queue)
    result = await client.asend_task("w.add", [1, 1], queue=queue)
    await result.aget(timeout=15)
    lines = [line for line in worker.log().splitlines() if "succeeded" in line]
    assert any(f"[task {result.id}]" in line for line in lines), worker.log()


async def test_never_holds_more_than_free_slots(
    start_worker, client: Celeriac, broker: Broker, queue: str
) -> None:
    start_worker(queue, concurrency=2)
    results = [await client.asend_task("w.asleep", [0.5], queue=queue) for _ in range(8)]
    peak = 0

    async def drained() -> bool:
        nonlocal peak
        info = await broker.js.consumer_info(names.stream_name(queue), names.CONSUMER_NAME)
        peak = max(peak, info.num_ack_pending)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await await_until(drained, timeout=20, what="the queue to drain", interval=0.05)
    assert 1 <= peak <= 2
    for result in results:
        assert await result.aget(timeout=15) == 0.5


async def test_consumes_several_queues(start_worker, client: Celeriac, queue: str) -> None:
    other = f"{queue}-b"
    start_worker(f"{queue},{other}", concurrency=1)
    one = await client.asend_task("w.add", [1, 1], queue=queue)
    two = await client.asend_task("w.add", [2, 2], queue=other)
    assert await one.aget(timeout=15) == 2
    assert await two.aget(timeout=15) == 4


async def test_hand_written_json_message(start_worker, broker: Broker, queue: str) -> None:
    """Any language can submit: plain JSON on the task subject, no SDK involved."""
    await broker.ensure_queue(queue)
    start_worker(queue)
    body = {"v": 1, "id": "hand-written-1", "task": "w.add", "args": [40, 2], "queue": queue}
    await broker.js.publish(
        names.task_subject(queue),
        json.dumps(body).encode(),
        headers={names.HDR_MSG_ID: f"hand-written-{queue}"},
    )

    async def stored() -> ResultRecord | None:
        record = await broker.results.get("hand-written-1")
        return record if record is not None and record.state.ready else None

    record = await await_until(stored, timeout=15, what="the result")
    assert record.state is TaskState.SUCCESS and record.result == 42
