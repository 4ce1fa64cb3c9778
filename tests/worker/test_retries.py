"""Celery's retry rules, time limits and task-class hooks, against real workers.

A failure retries only when the task asks (``autoretry_for``, ``self.retry()``), up to
``max_retries``; time limits only when named; a killed worker's task still comes back.
Tasks are in apps/retrytasks.py and log each run and hook call to a file per key.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import ConsumerConfig, StreamConfig

from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.protocol import jetstream, names
from celeriac.protocol.envelope import DeadLetterReason, ResultRecord
from celeriac.protocol.states import TaskState
from tests.support import (
    WORKER_APPS,
    Worker,
    WorkerApp,
    await_until,
    wait_dead_letters,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def events_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "events"
    folder.mkdir()
    return folder


@pytest.fixture
def worker_app(events_dir: Path) -> WorkerApp:
    """Workers of this module run ``retrytasks``, logging events in ``events_dir``."""
    return WorkerApp("retrytasks", WORKER_APPS, env={"RETRY_EVENTS": str(events_dir)})


def new_key() -> str:
    return f"k-{uuid.uuid4().hex[:12]}"


def events(events_dir: Path, key: str) -> list[dict[str, Any]]:
    path = events_dir / key
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def names_of(events_dir: Path, key: str) -> list[str]:
    return [e["event"] for e in events(events_dir, key)]


async def final(client: Celeriac, task_id: str, worker: Worker) -> ResultRecord:
    async def ready() -> ResultRecord | None:
        record = await client.AsyncResult(task_id).arecord()
        return record if record is not None and record.state.ready else None

    return await await_until(
        ready, timeout=30, what=f"a final record for {task_id}", alive=worker.process
    )


async def run(
    client: Celeriac, worker: Worker, queue: str, task: str, key: str, *args: Any
) -> tuple[str, ResultRecord]:
    result = await client.asend_task(task, [key, *args], queue=queue)
    return result.id, await final(client, result.id, worker)


async def quiet_for(events_dir: Path, key: str, expected: list[str], seconds: float) -> None:
    """The events stay ``expected`` for ``seconds`` (polled): nothing runs again."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert names_of(events_dir, key) == expected
        await asyncio.sleep(0.1)
    assert names_of(events_dir, key) == expected


# Which failures retry -----------------------------------------------------------------------


async def test_an_exception_not_asked_for_runs_once_and_fails(
    start_worker, client: Celeriac, broker: Broker, queue: str, events_dir: Path
) -> None:
    worker = start_worker(queue)
    key = new_key()
    task_id, record = await run(client, worker, queue, "r.plain", key)
    assert record.state is TaskState.FAILURE and record.exc_type == "ValueError"
    assert record.retries == 0 and record.error == "ValueError: plain failure"
    [letter] = await wait_dead_letters(broker, queue, 1)
    assert letter.reason is DeadLetterReason.MAX_RETRIES and letter.task_id == task_id
    assert letter.deliveries == 1
    await quiet_for(events_dir, key, ["run"], seconds=1.5)


async def test_autoretry_for_retries_up_to_max_retries_then_fails(
    start_worker, client: Celeriac, broker: Broker, queue: str, events_dir: Path
) -> None:
    worker = start_worker(queue)
    key = new_key()
    task_id, record = await run(client, worker, queue, "r.auto", key)
    assert record.task == "r.auto"
    # max_retries=2: three runs; the last error is the task's own (Celery's retry(exc=exc)).
    assert record.state is TaskState.FAILURE and record.exc_type == "ValueError"
    assert record.retries == 2 and record.error == "ValueError: still failing"
    [letter] = await wait_dead_letters(broker, queue, 1)
    assert letter.reason is DeadLetterReason.MAX_RETRIES and letter.deliveries == 3
    assert letter.task_id == task_id
    assert names_of(events_dir, key) == ["run"] * 3
    # retry_kwargs countdown, and a retry that then succeeds.
    key = new_key()
    _, record = await run(client, worker, queue, "r.auto_then_ok", key)
    assert record.state is TaskState.SUCCESS and record.retries == 2
    assert names_of(events_dir, key) == ["run"] * 3


async def test_dont_autoretry_for_wins(
    start_worker, client: Celeriac, queue: str, events_dir: Path
) -> None:
    worker = start_worker(queue)
    key = new_key()
    _, record = await run(client, worker, queue, "r.dont", key)
    assert record.state is TaskState.FAILURE and record.exc_type == "KeyError"
    await quiet_for(events_dir, key, ["run"], seconds=1.0)


async def test_self_retry_past_max_retries_raises_max_retries_exceeded(
    start_worker, client: Celeriac, queue: str, events_dir: Path
) -> None:
    worker = start_worker(queue, pool="threads")
    key = new_key()
    _, record = await run(client, worker, queue, "r.retry_past_max", key)
    assert record.state is TaskState.FAILURE
    assert record.exc_type == "MaxRetriesExceededError", record
    assert record.error and "cannot retry r.retry_past_max" in record.error
    # Raised inside the task on its second run, where it could be caught.
    assert names_of(events_dir, key) == ["run", "run", "max retries exceeded"]
    # With exc=, that error is what the task ends with.
    key = new_key()
    _, record = await run(client, worker, queue, "r.retry_exc", key)
    assert record.state is TaskState.FAILURE and record.exc_type == "OSError"
    assert record.error == "OSError: disk full" and record.retries == 1
    assert names_of(events_dir, key) == ["run", "run"]


async def test_self_retry_may_raise_its_own_max_retries(
    start_worker, client: Celeriac, queue: str, events_dir: Path
) -> None:
    # max_retries=1 on the task, self.retry(max_retries=3): the fourth delivery is not
    # taken for a crash loop (its RETRY record says the previous run asked for it).
    worker = start_worker(queue)
    key = new_key()
    _, record = await run(client, worker, queue, "r.retry_more", key)
    assert record.state is TaskState.SUCCESS and record.retries == 3
    assert names_of(events_dir, key) == ["run"] * 4


# Time limits --------------------------------------------------------------------------------


async def test_a_hard_time_limit_is_not_retried_unless_named(
    start_worker, client: Celeriac, queue: str, events_dir: Path
) -> None:
    worker = start_worker(queue)
    key = new_key()
    # autoretry_for=(Exception,) and max_retries 3: still one run.
    _, record = await run(client, worker, queue, "r.hard", key)
    assert record.state is TaskState.FAILURE and record.exc_type == "TimeLimitExceeded"
    await quiet_for(events_dir, key, ["run"], seconds=1.5)
    # autoretry_for=(TimeLimitExceeded,), max_retries=1: two runs.
    key = new_key()
    _, record = await run(client, worker, queue, "r.hard_listed", key)
    assert record.state is TaskState.FAILURE and record.exc_type == "TimeLimitExceeded"
    assert record.retries == 1 and names_of(events_dir, key) == ["run", "run"]


async def test_async_task_catches_soft_time_limit_exceeded(
    start_worker, client: Celeriac, queue: str, events_dir: Path
) -> None:
    worker = start_worker(queue)
    key = new_key()
    _, record = await run(client, worker, queue, "r.asoft", key)
    assert record.state is TaskState.SUCCESS and record.result == "cleaned up"
    [started, soft] = events(events_dir, key)
    assert (started["event"], soft["event"]) == ("run", "soft")
    assert soft["message"] == "soft time limit (0.3 s) exceeded"
    # A task that carries on after the soft limit is still ended by the hard limit.
    key = new_key()
    _, record = await run(client, worker, queue, "r.asoft_ignored", key)
    assert record.state is TaskState.FAILURE and record.exc_type == "TimeLimitExceeded"
    assert names_of(events_dir, key) == ["run", "soft", "cancelled"]


# Crashes still come back ---------------------------------------------------------------------


async def declare_queue(broker: Broker, queue: str, ack_wait: float) -> None:
    """Create the queue as the SDK would, with a short ack_wait; workers create nothing."""
    settings = jetstream.QueueSettings(ack_wait_seconds=ack_wait)
    await broker.js.add_stream(StreamConfig(**jetstream.work_stream_config(queue, settings)))
    await broker.js.add_stream(StreamConfig(**jetstream.dead_letter_stream_config(queue, settings)))
    await broker.js.add_consumer(
        names.stream_name(queue), ConsumerConfig(**jetstream.consumer_config(queue, settings))
    )


async def test_a_killed_workers_task_comes_back_and_runs(
    start_worker, client: Celeriac, broker: Broker, queue: str, events_dir: Path
) -> None:
    # No autoretry_for: a failure would not retry, but a crash is not a failure. The
    # redelivery counts against max_retries (3), which bounds a task that always crashes.
    await declare_queue(broker, queue, ack_wait=2.0)
    first = start_worker(queue, pool="threads", concurrency=1)
    key = new_key()
    result = await client.asend_task("r.killed_once", [key], queue=queue)
    await await_until(lambda: not first.process.alive(), timeout=20, what="the worker to die")
    second = start_worker(queue, pool="threads", concurrency=1)
    record = await final(client, result.id, second)
    assert record.state is TaskState.SUCCESS and record.result == "survived"
    assert record.retries == 1 and names_of(events_dir, key) == ["run", "run"]


# Hooks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["asyncio", "threads", "processes"])
async def test_hooks_are_called_with_celerys_arguments(
    start_worker, client: Celeriac, queue: str, events_dir: Path, pool: str
) -> None:
    worker = start_worker(queue, pool=pool, concurrency=2)
    key = new_key()
    result = await client.asend_task("r.hooked_ok", [key], {"factor": 3}, queue=queue)
    record = await final(client, result.id, worker)
    assert record.state is TaskState.SUCCESS and record.result == 63
    await await_until(lambda: len(events(events_dir, key)) == 4, timeout=10, what="4 events")
    before, ran, success, after = events(events_dir, key)
    assert before == {"event": "before_start", "pid": worker.process.pid, "task_id": result.id,
                      "args": [key], "kwargs": {"factor": 3}}  # fmt: skip
    assert ran["event"] == "run"
    if pool == "processes":  # the task ran in a child, the hooks in the worker process
        assert ran["pid"] != worker.process.pid
    assert success == {"event": "on_success", "pid": worker.process.pid, "retval": 63,
                       "task_id": result.id, "kwargs": {"factor": 3}}  # fmt: skip
    assert after == {"event": "after_return", "pid": worker.process.pid, "status": "SUCCESS",
                     "retval": 63, "task_id": result.id, "einfo": False}  # fmt: skip

    key = new_key()
    result = await client.asend_task("r.hooked_fail", [key], queue=queue)
    record = await final(client, result.id, worker)
    assert record.state is TaskState.FAILURE and record.retries == 1
    expected = [
        "before_start", "run", "on_retry", "after_return",
        "before_start", "run", "on_failure", "after_return",
    ]  # fmt: skip
    await await_until(
        lambda: names_of(events_dir, key) == expected, timeout=10, what="retry and failure hooks"
    )
    found = events(events_dir, key)
    retry, retried, failure, failed = found[2], found[3], found[6], found[7]
    raised = ["ValueError", f"bad input {key}"]
    assert retry["exc"] == raised and retry["einfo_type"] == "ValueError"
    assert "ValueError: bad input" in retry["traceback"] and retry["task_id"] == result.id
    assert retried["status"] == "RETRY" and retried["retval"] == raised and retried["einfo"]
    # The exception itself, in the processes pool too (a copy made in the child).
    assert failure["exc"] == raised and failure["is_value_error"] is True
    assert "Traceback" in failure["traceback"]
    assert failed["status"] == "FAILURE" and failed["retval"] == raised


async def test_hooks_see_a_hard_time_limit(
    start_worker, client: Celeriac, queue: str, events_dir: Path
) -> None:
    worker = start_worker(queue)
    key = new_key()
    result = await client.asend_task("r.hooked_hard", [key], queue=queue)
    record = await final(client, result.id, worker)
    assert record.exc_type == "TimeLimitExceeded"
    await await_until(lambda: len(events(events_dir, key)) == 4, timeout=10, what="4 events")
    failure = events(events_dir, key)[2]
    assert failure["event"] == "on_failure" and failure["einfo_type"] == "TimeLimitExceeded"
    assert failure["exc"] == ["TimeLimitExceeded", "task exceeded its time limit (0.5 s)"]


async def test_a_hook_that_raises_leaves_the_outcome(
    start_worker, client: Celeriac, queue: str, events_dir: Path
) -> None:
    worker = start_worker(queue)
    key = new_key()
    _, record = await run(client, worker, queue, "r.brittle", key)
    assert record.state is TaskState.SUCCESS and record.result == "kept"
    await await_until(
        lambda: names_of(events_dir, key) == ["before_start", "run", "on_success", "after_return"],
        timeout=10,
        what="after_return after a broken on_success",
    )
    await await_until(
        lambda: "the on_success hook of r.brittle raised" in worker.log(), timeout=10,
        what="the hook's error in the log",
    )  # fmt: skip
    # An async hook runs on the loop.
    key = new_key()
    _, record = await run(client, worker, queue, "r.async_hooked", key)
    await await_until(
        lambda: names_of(events_dir, key) == ["run", "async on_success"], timeout=10,
        what="the async hook",
    )  # fmt: skip
    assert events(events_dir, key)[1]["retval"] == "async ok"


async def test_a_base_class_sets_retry_options_and_hooks(
    start_worker, client: Celeriac, queue: str, events_dir: Path
) -> None:
    worker = start_worker(queue)
    key = new_key()
    _, record = await run(client, worker, queue, "r.base_class", key)
    assert record.state is TaskState.FAILURE and record.exc_type == "KeyError"
    assert record.retries == 1
    expected = [
        "before_start", "run", "on_retry", "after_return",
        "before_start", "run", "on_failure", "after_return",
    ]  # fmt: skip
    await await_until(
        lambda: names_of(events_dir, key) == expected, timeout=10, what="the base class's hooks"
    )


async def test_a_task_ignoring_its_results_may_raise_its_own_max_retries(
    start_worker, client: Celeriac, broker: Broker, queue: str, events_dir: Path
) -> None:
    # r.retry_more with ignore_result: it stores no RETRY record of its own, yet its
    # third and fourth deliveries are not taken for a crash loop.
    worker = start_worker(queue)
    key = new_key()
    result = await client.asend_task("r.retry_more_quiet", [key], queue=queue)
    await await_until(
        lambda: names_of(events_dir, key) == ["run"] * 4 + ["done"], timeout=30,
        what="four runs", alive=worker.process,
    )  # fmt: skip
    info = await broker.js.stream_info(names.dead_letter_stream_name(queue))
    assert info.state.messages == 0  # not dead-lettered as poison
    assert await client.AsyncResult(result.id).arecord() is None  # nothing kept for it


# What crosses back from a processes-pool child ------------------------------------------------


async def test_an_exception_the_worker_cannot_unpickle_does_not_run_the_task_again(
    start_worker, client: Celeriac, queue: str, events_dir: Path
) -> None:
    worker = start_worker(queue, pool="processes", concurrency=1)
    key = new_key()
    _, record = await run(client, worker, queue, "r.child_only_error", key)
    assert record.state is TaskState.FAILURE and record.exc_type == "ChildOnlyError"
    assert record.error == "ChildOnlyError: raised in the child" and record.retries == 0
    expected = ["before_start", "run", "on_failure", "after_return"]
    await await_until(
        lambda: names_of(events_dir, key) == expected, timeout=10, what="the failure hooks"
    )
    # The hooks get a stand-in carrying the type name and message.
    failure = events(events_dir, key)[2]
    assert failure["exc"][0] == failure["einfo_type"] == "ChildOnlyError"
    assert failure["exc"][1].endswith("ChildOnlyError: raised in the child")
    assert "cannot be read back from the child process" in worker.log()
    await quiet_for(events_dir, key, expected, seconds=1.5)


# before_start within the time limit -----------------------------------------------------------


async def test_a_sync_before_start_past_the_time_limit_ends_the_attempt(
    start_worker, client: Celeriac, queue: str, events_dir: Path
) -> None:
    worker = start_worker(queue, concurrency=1)
    key = new_key()
    # time_limit=0.5; the hook sleeps 3 s on its thread.
    _, record = await run(client, worker, queue, "r.slow_start", key, 3.0)
    assert record.state is TaskState.FAILURE and record.exc_type == "TimeLimitExceeded"
    assert names_of(events_dir, key) == ["before_start"]  # ended before the hook returned
    # Its thread keeps the only slot: the next task starts once the hook has returned.
    after = new_key()
    _, record = await run(client, worker, queue, "r.slow_start", after, 0.0)
    assert record.state is TaskState.SUCCESS and record.result == "ran"
    assert names_of(events_dir, key) == ["before_start", "before_start returned"]
    assert names_of(events_dir, after) == ["before_start", "before_start returned", "run"]


async def test_an_async_before_start_past_the_time_limit_is_cancelled(
    start_worker, client: Celeriac, queue: str, events_dir: Path
) -> None:
    worker = start_worker(queue)
    key = new_key()
    _, record = await run(client, worker, queue, "r.aslow_start", key, 30.0)
    assert record.state is TaskState.FAILURE and record.exc_type == "TimeLimitExceeded"
    await await_until(
        lambda: names_of(events_dir, key) == ["before_start", "before_start cancelled"],
        timeout=10, what="the hook to be cancelled",
    )  # fmt: skip
    await quiet_for(events_dir, key, ["before_start", "before_start cancelled"], seconds=1.0)
