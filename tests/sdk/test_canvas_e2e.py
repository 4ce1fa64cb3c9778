"""Canvas, expiry, revocation and the protocol example, run by real worker processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from celeriac.app import Celeriac
from celeriac.async_result import GroupResult
from celeriac.canvas import Signature, chain, chord, group
from celeriac.exceptions import TaskError, TaskRevokedError
from celeriac.protocol.states import TaskState
from tests.support import StartWorker

from .test_protocol_doc import doc_example

pytestmark = pytest.mark.integration


def s(app: Celeriac, name: str, *args: Any, immutable: bool = False) -> Signature:
    return app.signature(name, args, immutable=immutable)


async def test_chain_runs_in_order(aapp: Celeriac, queue: str, start_worker: StartWorker) -> None:
    start_worker(queue)
    flow = s(aapp, "cv.add", 1, 2) | s(aapp, "cv.add", 10) | s(aapp, "cv.mul", 2)
    result = await flow.aapply_async()
    assert await result.aget(timeout=30) == 26
    assert await result.parent.aget(timeout=5) == 13


async def test_chain_stops_at_a_failure(
    aapp: Celeriac, queue: str, start_worker: StartWorker
) -> None:
    start_worker(queue)
    flow = chain(s(aapp, "cv.add", 1, 2), s(aapp, "cv.broken"), s(aapp, "cv.add", 1))
    result = await flow.aapply_async()
    with pytest.raises(TaskError, match="broken on 3"):
        await result.aget(timeout=30)
    assert await result.parent.astate() is TaskState.FAILURE


async def test_group_results_in_order(
    aapp: Celeriac, queue: str, start_worker: StartWorker
) -> None:
    start_worker(queue)
    result = await group(s(aapp, "cv.add", i, i) for i in range(20)).aapply_async()
    assert isinstance(result, GroupResult)
    assert await result.aget(timeout=30) == [2 * i for i in range(20)]


def test_chord_callback_once_with_retried_members(
    app: Celeriac, queue: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    """Two workers, members that fail and retry: the callback runs exactly once."""
    start_worker(queue, pool="threads")
    start_worker(queue, pool="asyncio")
    log = tmp_path / "callback.log"
    members = [s(app, "cv.flaky", i, i % 3) for i in range(12)]
    result = chord(members, app.signature("cv.total", (str(log),))).delay()
    assert result.get(timeout=60) == sum(range(12))
    assert isinstance(result.parent, GroupResult)
    assert result.parent.completed_count() == 12
    assert log.read_text().splitlines() == [str(sum(range(12)))]


async def test_chord_with_a_failed_member(
    aapp: Celeriac, queue: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker(queue)
    log = tmp_path / "callback.log"
    members = [s(aapp, "cv.add", 1, 1), s(aapp, "cv.broken", 7), s(aapp, "cv.add", 2, 2)]
    result = await chord(members, aapp.signature("cv.total", (str(log),))).aapply_async()
    with pytest.raises(TaskError, match=r"chord member .* failed: .*broken on 7"):
        await result.aget(timeout=30)
    assert not log.exists()


async def test_expired_task_is_revoked(
    aapp: Celeriac, queue: str, start_worker: StartWorker
) -> None:
    start_worker(queue)
    result = await aapp.asend_task("cv.add", (1, 2), expires=-1)
    with pytest.raises(TaskRevokedError, match="expired"):
        await result.aget(timeout=30)


async def test_revoke_before_start(aapp: Celeriac, queue: str, start_worker: StartWorker) -> None:
    start_worker(queue)
    result = await aapp.asend_task("cv.add", (1, 2), countdown=1)
    await result.arevoke()
    marker = await aapp.asend_task("cv.add", (0, 0), countdown=1.5)
    assert await marker.aget(timeout=30) == 0  # the worker has been past the revoked task
    record = await result.arecord()
    assert record is not None and record.state is TaskState.REVOKED


async def test_tasks_submit_tasks(aapp: Celeriac, queue: str, start_worker: StartWorker) -> None:
    start_worker(queue, pool="threads")
    start_worker(queue, pool="asyncio")
    child_ids = await asyncio.gather(
        (await aapp.asend_task("cv.spawn", (2, 3))).aget(timeout=30),
        (await aapp.asend_task("cv.aspawn", (4, 5))).aget(timeout=30),
    )
    results = [await aapp.AsyncResult(i).aget(timeout=30) for i in child_ids]
    assert results == [5, 9]


async def test_hand_written_message_runs(
    aapp: Celeriac, queue: str, start_worker: StartWorker, raw_nc: Client
) -> None:
    """The JSON example of docs/protocol.md, published with plain nats-py, is run."""
    start_worker(queue)
    body = doc_example()
    body["queue"] = queue
    body["id"] = f"doc-{queue}"
    await raw_nc.jetstream().publish(
        f"celeriac.tasks.{queue}", json.dumps(body).encode(), headers={"Nats-Msg-Id": body["id"]}
    )
    assert await aapp.AsyncResult(body["id"]).aget(timeout=30) == 5
