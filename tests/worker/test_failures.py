"""Retries with backoff, dead-lettering, expiry and revocation, against a real worker."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.exceptions import TaskError
from celeriac.protocol import names
from celeriac.protocol.envelope import DeadLetterReason, TaskMessage
from celeriac.protocol.states import TaskState
from tests.support import await_until, wait_dead_letters

pytestmark = pytest.mark.integration


async def test_retries_then_succeeds(start_worker, client: Celeriac, queue: str) -> None:
    start_worker(queue)
    result = await client.asend_task("w.flaky", [2], queue=queue)
    # The task returns the retry number it succeeded on: two failures, then success.
    assert await result.aget(timeout=20) == 2


async def test_retry_backoff_then_dead_letter(
    start_worker, client: Celeriac, broker: Broker, queue: str
) -> None:
    start_worker(queue)
    started = time.monotonic()
    result = await client.asend_task("w.fail", queue=queue)
    with pytest.raises(TaskError, match="always broken") as err:
        await result.aget(timeout=20)
    elapsed = time.monotonic() - started
    # max_retries=2, backoff 0.3 s without jitter: waits of 0.3 s and 0.6 s.
    assert elapsed >= 0.9, elapsed
    assert err.value.exc_type == "ValueError"
    record = await result.arecord()
    assert record is not None and record.state is TaskState.FAILURE and record.retries == 2
    assert record.traceback and "ValueError: always broken" in record.traceback
    [letter] = await wait_dead_letters(broker, queue, 1)
    assert letter.reason is DeadLetterReason.MAX_RETRIES
    assert letter.task_id == result.id and letter.task == "w.fail"
    assert letter.deliveries == 3
    assert letter.traceback and "always broken" in letter.traceback
    assert TaskMessage.model_validate_json(letter.original).id == result.id
    await _work_stream_empty(broker, queue)


async def test_retry_countdown_wins(start_worker, client: Celeriac, queue: str) -> None:
    start_worker(queue)
    started = time.monotonic()
    result = await client.asend_task("w.retry_countdown", [1.0], queue=queue)
    assert await result.aget(timeout=15) == "retried"
    assert time.monotonic() - started >= 1.0


async def test_unknown_task_is_dead_lettered(
    start_worker, client: Celeriac, broker: Broker, queue: str
) -> None:
    start_worker(queue)
    result = await client.asend_task("w.no_such_task", [1], queue=queue)
    with pytest.raises(TaskError, match="not registered"):
        await result.aget(timeout=15)
    [letter] = await wait_dead_letters(broker, queue, 1)
    assert letter.reason is DeadLetterReason.UNKNOWN_TASK
    assert letter.task == "w.no_such_task" and letter.task_id == result.id
    await _work_stream_empty(broker, queue)


async def test_malformed_and_wrong_version_are_dead_lettered(
    start_worker, client: Celeriac, broker: Broker, queue: str
) -> None:
    await broker.ensure_queue(queue)
    subject = names.task_subject(queue)
    bad = {
        b"{this is not json": DeadLetterReason.MALFORMED,
        json.dumps({"v": 1, "id": "x y", "task": "w.add", "queue": queue}).encode(): (
            DeadLetterReason.MALFORMED
        ),
        json.dumps({"v": 99, "id": "v99", "task": "w.add", "queue": queue}).encode(): (
            DeadLetterReason.UNSUPPORTED_VERSION
        ),
    }
    for payload in bad:
        await broker.js.publish(subject, payload)
    # A good task after the bad ones still runs: the worker survived them.
    worker = start_worker(queue)
    good = await client.asend_task("w.add", [1, 2], queue=queue)
    assert await good.aget(timeout=15) == 3
    letters = await wait_dead_letters(broker, queue, 3)
    by_original = {letter.original.encode(): letter for letter in letters}
    for payload, reason in bad.items():
        assert by_original[payload].reason is reason
        assert by_original[payload].deliveries == 1
    assert by_original[next(iter(bad))].error.startswith("not valid JSON")
    assert worker.process.alive()
    await _work_stream_empty(broker, queue)


async def test_expired_task_is_revoked(start_worker, client: Celeriac, queue: str) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    result = await client.asend_task("w.add", [1, 2], queue=queue, expires=past)
    start_worker(queue)
    record = await await_until(result.arecord, timeout=15, what="a result record")
    assert record.state is TaskState.REVOKED
    assert record.error and record.error.startswith("expired at")


async def test_revoked_before_start_is_skipped(start_worker, client: Celeriac, queue: str) -> None:
    result = await client.asend_task("w.add", [1, 2], queue=queue)
    await result.arevoke()
    start_worker(queue)
    after = await client.asend_task("w.add", [2, 2], queue=queue)
    assert await after.aget(timeout=15) == 4
    record = await result.arecord()
    assert record is not None and record.state is TaskState.REVOKED
    assert record.error == "revoked"


async def _work_stream_empty(broker: Broker, queue: str) -> None:
    async def empty() -> bool:
        info = await broker.js.stream_info(names.stream_name(queue))
        return info.state.messages == 0

    await await_until(empty, timeout=10, what="the work stream to be empty")
