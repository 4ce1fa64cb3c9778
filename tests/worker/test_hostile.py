"""Hostile input and hostile tasks against real worker processes: every message ends.

Each case publishes raw bytes (plain nats-py, a ``Nats-Msg-Id`` of its own) or runs a
task that misbehaves, then asserts two things:

1. the message ended: it is gone from the work stream (0 messages, 0 ack-pending) and
   reached its terminal state: a dead letter with the expected reason and an error
   naming the problem, and/or the expected result record;
2. the worker keeps consuming: the same process is alive and a normal task submitted
   afterwards succeeds (except where the case kills or stops the worker on purpose).

The malformed-body cases and the misbehaving-task cases share one long-lived worker
per pool (module scope); each case is still its own test id.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import ConsumerConfig, StreamConfig

from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.protocol import jetstream, names
from celeriac.protocol.envelope import DeadLetter, DeadLetterReason, ResultRecord
from celeriac.protocol.states import TaskState
from tests import support
from tests.support import WORKER_APPS, Worker, WorkerApp, await_until

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
NOT_JSON = "not valid JSON:"
INVALID = "invalid task envelope:"


# Fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where hostile_tasks counts runs: one file per key, one byte per run."""
    return tmp_path_factory.mktemp("hostile-runs")


@pytest.fixture
def worker_app(runs_dir: Path) -> WorkerApp:
    """Workers of this module run ``hostile_tasks``, counting runs in ``runs_dir``."""
    return WorkerApp("hostile_tasks", WORKER_APPS, env={"HOSTILE_RUNS": str(runs_dir)})


class SharedWorkers:
    """One worker per pool, each on a queue of its own, kept for the whole module.

    A worker that died (a failing case) is replaced for the next case, so one failure
    does not fail every later case; the case that killed it fails on its own checks.
    """

    def __init__(self, nats_url: str, log_dir: Path, runs: Path) -> None:
        self.nats_url = nats_url
        self.log_dir = log_dir
        self.runs = runs
        self.workers: dict[str, tuple[Worker, str]] = {}
        self.started: list[Worker] = []

    def get(self, pool: str) -> tuple[Worker, str]:
        known = self.workers.get(pool)
        if known is not None and known[0].process.alive():
            return known
        queue = known[1] if known is not None else f"hq-{pool}-{uuid.uuid4().hex[:8]}"
        worker = support.start_worker(
            queue,
            nats_url=self.nats_url,
            log_dir=self.log_dir,
            name=f"shared-{pool}-{len(self.started) + 1}",
            app="hostile_tasks",
            pool=pool,
            concurrency=4,
            env={"HOSTILE_RUNS": str(self.runs)},
        )
        self.started.append(worker)
        self.workers[pool] = (worker, queue)
        return worker, queue

    def stop(self) -> None:
        for worker in self.started:
            worker.process.stop(grace=5)


@pytest.fixture(scope="module")
def shared_workers(
    nats_url: str, tmp_path_factory: pytest.TempPathFactory, runs_dir: Path
) -> Iterator[SharedWorkers]:
    workers = SharedWorkers(nats_url, tmp_path_factory.mktemp("shared-workers"), runs_dir)
    yield workers
    workers.stop()


@pytest.fixture
def shared(shared_workers: SharedWorkers) -> Callable[[str], tuple[Worker, str]]:
    """``shared(pool)`` -> (the module's live worker of that pool, its queue)."""
    return shared_workers.get


# Helpers -----------------------------------------------------------------------------------


def new_key() -> str:
    return f"k-{uuid.uuid4().hex[:16]}"


def runs(runs_dir: Path, key: str) -> int:
    """How many times a counted task started with ``key``."""
    path = runs_dir / key
    return path.stat().st_size if path.exists() else 0


def envelope(queue: str, task_id: str, task: str = "h.ok", args: Any = (1,), **fields: Any) -> dict:
    return {"v": 1, "id": task_id, "task": task, "args": list(args), "queue": queue, **fields}


def dumps(doc: dict) -> bytes:
    return json.dumps(doc).encode()


async def publish_raw(broker: Broker, queue: str, body: bytes) -> str:
    """Publish ``body`` as is to the queue's task subject; return its Nats-Msg-Id."""
    msg_id = f"raw-{uuid.uuid4().hex}"
    await broker.js.publish(names.task_subject(queue), body, headers={names.HDR_MSG_ID: msg_id})
    return msg_id


async def dlq_last_seq(broker: Broker, queue: str) -> int:
    info = await broker.js.stream_info(names.dead_letter_stream_name(queue))
    return info.state.last_seq


async def find_letter(
    broker: Broker, queue: str, msg_id: str, after: int = 0
) -> tuple[DeadLetter, bytes] | None:
    """The dead letter (and its raw bytes) of the message published with ``msg_id``."""
    stream = names.dead_letter_stream_name(queue)
    info = await broker.js.stream_info(stream)
    for seq in range(info.state.last_seq, max(after, info.state.first_seq - 1), -1):
        msg = await broker.js.get_msg(stream, seq)
        letter = DeadLetter.model_validate_json(msg.data or b"")
        if letter.original_headers.get(names.HDR_MSG_ID) == msg_id:
            return letter, msg.data or b""
    return None


async def wait_letter(
    broker: Broker, queue: str, msg_id: str, worker: Worker | None, after: int = 0
) -> tuple[DeadLetter, bytes]:
    return await await_until(
        lambda: find_letter(broker, queue, msg_id, after),
        timeout=20,
        what=f"the dead letter of {msg_id}",
        interval=0.05,
        alive=worker.process if worker is not None else None,
    )


async def settled(broker: Broker, queue: str, worker: Worker | None = None) -> None:
    """The work stream holds nothing and the consumer has nothing pending or unacked."""

    async def empty() -> bool:
        info = await broker.js.stream_info(names.stream_name(queue))
        consumer = await broker.js.consumer_info(names.stream_name(queue), names.CONSUMER_NAME)
        state = (info.state.messages, consumer.num_ack_pending, consumer.num_pending)
        assert state == (0, 0, 0), f"(messages, ack-pending, pending) = {state}"
        return True

    await await_until(
        empty,
        timeout=20,
        what="the work stream to be empty (0 messages, 0 ack-pending, 0 pending)",
        interval=0.05,
        alive=worker.process if worker is not None else None,
    )


async def final_record(client: Celeriac, task_id: str, worker: Worker | None) -> ResultRecord:
    async def ready() -> ResultRecord | None:
        record = await client.AsyncResult(task_id).arecord()
        return record if record is not None and record.state.ready else None

    return await await_until(
        ready,
        timeout=20,
        what=f"a final record for {task_id}",
        interval=0.05,
        alive=worker.process if worker is not None else None,
    )


async def keeps_consuming(client: Celeriac, queue: str, worker: Worker, pid: int) -> None:
    """The same worker process is alive and runs a normal task submitted now."""
    assert worker.process.pid == pid and worker.process.alive(), (
        f"worker {pid} died:\n{worker.process.log_tail()}"
    )
    token = uuid.uuid4().hex
    result = await client.asend_task("h.ok", [token], queue=queue)
    try:
        assert await result.aget(timeout=15) == token
    except TimeoutError as exc:
        raise AssertionError(f"a normal task did not run:\n{worker.process.log_tail()}") from exc
    assert worker.process.alive(), worker.process.log_tail()


async def holds(check: Callable[[], bool], *, seconds: float, what: str) -> None:
    """``check`` stays true for ``seconds`` (polled): nothing changes behind our back."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), what
        await asyncio.sleep(0.1)
    assert check(), what


async def declare_queue(
    broker: Broker,
    queue: str,
    *,
    ack_wait: float = 2.0,
    max_deliveries: int = jetstream.DEFAULT_MAX_DELIVERIES,
) -> None:
    """Create the queue as the SDK would, but with a short ack_wait (and maxDeliveries);
    workers then find it and create nothing."""
    settings = jetstream.QueueSettings(ack_wait_seconds=ack_wait, max_deliveries=max_deliveries)
    await broker.js.add_stream(StreamConfig(**jetstream.work_stream_config(queue, settings)))
    await broker.js.add_stream(StreamConfig(**jetstream.dead_letter_stream_config(queue, settings)))
    await broker.js.add_consumer(
        names.stream_name(queue), ConsumerConfig(**jetstream.consumer_config(queue, settings))
    )


# Malformed bodies --------------------------------------------------------------------------


def _text(queue: str, task_id: str, inner: str) -> bytes:
    """An envelope written by hand, ``inner`` spliced in before the closing brace."""
    return (f'{{"v":1,"id":"{task_id}","task":"h.ok","queue":"{queue}",' + inner + "}").encode()


def _without(doc: dict, key: str) -> dict:
    return {k: v for k, v in doc.items() if k != key}


def _check_base64(letter: DeadLetter, body: bytes, worker: Worker) -> None:
    assert letter.original_encoding == "base64"
    assert base64.b64decode(letter.original) == body
    assert letter.original_size == len(body)


def _check_no_forged_line(letter: DeadLetter, body: bytes, worker: Worker) -> None:
    forged = [line for line in worker.log().splitlines() if line.startswith("INFO forged")]
    assert not forged, forged
    assert letter.task is None or "\n" not in letter.task


def _check_no_newline_id(letter: DeadLetter, body: bytes, worker: Worker) -> None:
    assert letter.task_id is None or "\n" not in letter.task_id


@dataclass(frozen=True)
class Bad:
    """A body a worker must dead-letter: the reason, how its error starts, what it names."""

    name: str
    body: Callable[[str, str], bytes]
    reason: DeadLetterReason
    prefixes: tuple[str, ...]
    names: tuple[str, ...]
    check: Callable[[DeadLetter, bytes, Worker], None] | None = None


MALFORMED = [
    Bad("not-json", lambda q, i: b"{this is not json", DeadLetterReason.MALFORMED,
        (NOT_JSON,), ("Expecting property name",)),
    Bad("empty-body", lambda q, i: b"", DeadLetterReason.MALFORMED, (NOT_JSON,), ("Expecting",)),
    Bad("json-array", lambda q, i: dumps([envelope(q, i)]), DeadLetterReason.MALFORMED,
        (NOT_JSON, INVALID), ("object",)),
    Bad("utf-16", lambda q, i: json.dumps(envelope(q, i)).encode("utf-16"),
        DeadLetterReason.MALFORMED, (NOT_JSON,), ("not UTF-8",)),
    Bad("invalid-utf-8", lambda q, i: _text(q, i, '"args":[1]').replace(b"h.ok", b"h.\xff\xfe"),
        DeadLetterReason.MALFORMED, (NOT_JSON,), ("not UTF-8",), _check_base64),
    Bad("nested-100000", lambda q, i: _text(q, i, '"args":' + "[" * 100_000 + "]" * 100_000),
        DeadLetterReason.MALFORMED, (NOT_JSON, INVALID), ("nested too deeply",)),
    Bad("int-5000-digits", lambda q, i: _text(q, i, '"args":[' + "7" * 5000 + "]"),
        DeadLetterReason.MALFORMED, (NOT_JSON,), ("a number has more than",)),
    Bad("nan-in-args", lambda q, i: _text(q, i, '"args":[1, NaN]'), DeadLetterReason.MALFORMED,
        (NOT_JSON,), ("NaN is not a JSON number",)),
    Bad("infinity-in-args", lambda q, i: _text(q, i, '"args":[Infinity]'),
        DeadLetterReason.MALFORMED, (NOT_JSON,), ("Infinity is not a JSON number",)),
    Bad("queue-twice", lambda q, i: _text(q, i, f'"queue":"{q}"'), DeadLetterReason.MALFORMED,
        (NOT_JSON,), ("key 'queue' appears twice",)),
    Bad("numeric-eta", lambda q, i: dumps(envelope(q, i, eta=1_900_000_000)),
        DeadLetterReason.MALFORMED, (INVALID,), ("eta: ", "must be an RFC 3339 time string")),
    Bad("garbage-expires", lambda q, i: dumps(envelope(q, i, expires="soon")),
        DeadLetterReason.MALFORMED, (INVALID,), ("expires: ", "RFC 3339")),
    Bad("retries-10-to-30", lambda q, i: dumps(envelope(q, i, retries=10**30)),
        DeadLetterReason.MALFORMED, (INVALID,), ("retries",)),
    Bad("task-name-forging-a-log-line",
        lambda q, i: dumps(envelope(q, i, task="h.ok\nINFO forged line: all is well")),
        DeadLetterReason.MALFORMED, (INVALID,), ("task: ", "invalid task name"),
        _check_no_forged_line),
    Bad("id-with-newline", lambda q, i: dumps(envelope(q, f"{i}\nINFO forged")),
        DeadLetterReason.MALFORMED, (INVALID,), ("id: ", "invalid task id"), _check_no_newline_id),
    Bad("missing-id", lambda q, i: dumps(_without(envelope(q, i), "id")),
        DeadLetterReason.MALFORMED, (INVALID,), ("id: Field required",)),
    Bad("empty-task-name", lambda q, i: dumps(envelope(q, i, task="")),
        DeadLetterReason.MALFORMED, (INVALID,), ("task: ",)),
    Bad("header-value-not-a-string", lambda q, i: dumps(envelope(q, i, headers={"h": 1})),
        DeadLetterReason.MALFORMED, (INVALID,), ("headers.h",)),
    Bad("args-not-an-array", lambda q, i: dumps(envelope(q, i) | {"args": "1, 2"}),
        DeadLetterReason.MALFORMED, (INVALID,), ("args: ",)),
    Bad("version-string-1", lambda q, i: dumps(envelope(q, i, v="1")),
        DeadLetterReason.UNSUPPORTED_VERSION, ("protocol version",), ("'1'", "v1")),
    Bad("version-2", lambda q, i: dumps(envelope(q, i, v=2)),
        DeadLetterReason.UNSUPPORTED_VERSION, ("protocol version",), ("2", "v1")),
]  # fmt: skip


@pytest.mark.parametrize("case", MALFORMED, ids=[c.name for c in MALFORMED])
async def test_malformed_body_is_dead_lettered_and_the_worker_goes_on(
    case: Bad, shared, client: Celeriac, broker: Broker
) -> None:
    worker, queue = shared("asyncio")
    pid = worker.process.pid
    body = case.body(queue, f"bad-{uuid.uuid4().hex[:12]}")
    after = await dlq_last_seq(broker, queue)
    msg_id = await publish_raw(broker, queue, body)
    letter, _ = await wait_letter(broker, queue, msg_id, worker, after)
    assert letter.reason is case.reason, letter
    assert letter.error.startswith(case.prefixes), letter.error
    for fragment in case.names:
        assert fragment in letter.error, letter.error
    assert "\n" not in letter.error  # logged on one line
    assert letter.deliveries == 1
    assert letter.queue == queue
    assert letter.original_size == len(body)
    if letter.original_encoding == "utf-8":
        assert letter.original.encode() == body
    if case.check is not None:
        case.check(letter, body, worker)
    await settled(broker, queue, worker)
    await keeps_consuming(client, queue, worker, pid)


async def test_a_body_whose_letter_would_not_fit_is_kept_truncated_with_its_hash(
    shared, client: Celeriac, broker: Broker
) -> None:
    worker, queue = shared("asyncio")
    pid = worker.process.pid
    # 900 KiB: publishable, but every '"' doubles inside the letter's JSON string.
    body = b'"' * (900 * 1024)
    after = await dlq_last_seq(broker, queue)
    msg_id = await publish_raw(broker, queue, body)
    letter, raw = await wait_letter(broker, queue, msg_id, worker, after)
    assert letter.reason is DeadLetterReason.MALFORMED
    assert letter.error.startswith(NOT_JSON), letter.error
    assert letter.original_truncated is True
    assert letter.original_size == len(body)
    assert letter.original_sha256 == hashlib.sha256(body).hexdigest()
    assert len(raw) < MIB
    assert body.startswith(letter.original.encode()) and len(letter.original) > 100_000
    await settled(broker, queue, worker)
    await keeps_consuming(client, queue, worker, pid)


# Unknown tasks -----------------------------------------------------------------------------


async def test_unknown_task_is_dead_lettered_with_a_failure_record(
    shared, client: Celeriac, broker: Broker
) -> None:
    worker, queue = shared("asyncio")
    pid = worker.process.pid
    task_id = f"unknown-{uuid.uuid4().hex}"
    after = await dlq_last_seq(broker, queue)
    msg_id = await publish_raw(broker, queue, dumps(envelope(queue, task_id, "h.no_such_task")))
    letter, _ = await wait_letter(broker, queue, msg_id, worker, after)
    assert letter.reason is DeadLetterReason.UNKNOWN_TASK
    assert "h.no_such_task" in letter.error and "not registered" in letter.error
    assert (letter.task_id, letter.task) == (task_id, "h.no_such_task")
    record = await final_record(client, task_id, worker)
    assert record.state is TaskState.FAILURE and record.exc_type == "NotRegistered"
    await settled(broker, queue, worker)
    await keeps_consuming(client, queue, worker, pid)


async def test_unknown_task_reusing_a_succeeded_id_leaves_the_success_alone(
    shared, client: Celeriac, broker: Broker
) -> None:
    worker, queue = shared("asyncio")
    pid = worker.process.pid
    task_id = f"done-{uuid.uuid4().hex}"
    first = await client.asend_task("h.ok", ["first"], queue=queue, task_id=task_id)
    assert await first.aget(timeout=15) == "first"
    kv = await broker.js.key_value(names.RESULTS_BUCKET)
    before = await kv.get(task_id)
    after = await dlq_last_seq(broker, queue)
    # Another Nats-Msg-Id than the task id, or the stream would drop it as a duplicate.
    msg_id = await publish_raw(broker, queue, dumps(envelope(queue, task_id, "h.no_such_task")))
    letter, _ = await wait_letter(broker, queue, msg_id, worker, after)
    assert letter.reason is DeadLetterReason.UNKNOWN_TASK and letter.task_id == task_id
    await settled(broker, queue, worker)
    now = await kv.get(task_id)
    assert (now.revision, now.value) == (before.revision, before.value)
    record = await client.AsyncResult(task_id).arecord()
    assert record is not None and record.state is TaskState.SUCCESS and record.result == "first"
    await keeps_consuming(client, queue, worker, pid)


# Outcomes that cannot be stored ------------------------------------------------------------


async def _run_counted(
    broker: Broker, queue: str, worker: Worker, task: str, key: str
) -> tuple[str, DeadLetter]:
    """Publish ``task(key)`` raw; return its id and its dead letter."""
    task_id = f"t-{uuid.uuid4().hex}"
    after = await dlq_last_seq(broker, queue)
    msg_id = await publish_raw(broker, queue, dumps(envelope(queue, task_id, task, [key])))
    letter, _ = await wait_letter(broker, queue, msg_id, worker, after)
    assert letter.task_id == task_id
    return task_id, letter


async def test_a_five_mib_result_fails_at_once_and_runs_once(
    shared, client: Celeriac, broker: Broker, runs_dir: Path
) -> None:
    worker, queue = shared("asyncio")
    pid = worker.process.pid
    key = new_key()
    task_id, letter = await _run_counted(broker, queue, worker, "h.big", key)
    assert letter.reason is DeadLetterReason.UNSTORABLE_RESULT
    assert "result too large: 5.2 MB, max payload 1 MiB" in letter.error
    record = await final_record(client, task_id, worker)
    assert record.state is TaskState.FAILURE and record.exc_type == "ResultTooLarge"
    assert record.error and "result too large: 5.2 MB, max payload 1 MiB" in record.error
    await settled(broker, queue, worker)
    # Longer than the 2 s settle-retry delay: it is not run again.
    await holds(lambda: runs(runs_dir, key) == 1, seconds=3.0, what="h.big ran more than once")
    await keeps_consuming(client, queue, worker, pid)


async def test_a_result_that_is_not_json_fails_at_once_and_runs_once(
    shared, client: Celeriac, broker: Broker, runs_dir: Path
) -> None:
    worker, queue = shared("asyncio")
    pid = worker.process.pid
    key = new_key()
    task_id, letter = await _run_counted(broker, queue, worker, "h.set", key)
    assert letter.reason is DeadLetterReason.UNSTORABLE_RESULT
    assert "set" in letter.error and "JSON" in letter.error, letter.error
    record = await final_record(client, task_id, worker)
    assert record.state is TaskState.FAILURE and record.exc_type == "TypeError"
    await settled(broker, queue, worker)
    await holds(lambda: runs(runs_dir, key) == 1, seconds=3.0, what="h.set ran more than once")
    await keeps_consuming(client, queue, worker, pid)


async def test_an_exception_whose_str_raises_is_still_recorded(
    shared, client: Celeriac, broker: Broker, runs_dir: Path
) -> None:
    worker, queue = shared("asyncio")
    pid = worker.process.pid
    key = new_key()
    task_id, letter = await _run_counted(broker, queue, worker, "h.unprintable", key)
    assert letter.reason is DeadLetterReason.MAX_RETRIES
    assert "UnprintableError" in letter.error
    record = await final_record(client, task_id, worker)
    assert record.state is TaskState.FAILURE and record.exc_type == "UnprintableError"
    assert record.error and "<str() of the exception raised" in record.error, record.error
    await settled(broker, queue, worker)
    assert runs(runs_dir, key) == 1
    await keeps_consuming(client, queue, worker, pid)


# Exits raised by task code -----------------------------------------------------------------

EXITS = [
    ("sys.exit-async-asyncio-pool", "h.aexit", "asyncio", "SystemExit"),
    ("sys.exit-sync-threads-pool", "h.exit", "threads", "SystemExit"),
    ("KeyboardInterrupt-sync-threads-pool", "h.interrupt", "threads", "KeyboardInterrupt"),
    ("KeyboardInterrupt-async-asyncio-pool", "h.ainterrupt", "asyncio", "KeyboardInterrupt"),
]


@pytest.mark.parametrize(("task", "pool", "exc_type"), [e[1:] for e in EXITS],
                         ids=[e[0] for e in EXITS])  # fmt: skip
async def test_an_exit_raised_by_a_task_is_a_task_failure(
    task: str,
    pool: str,
    exc_type: str,
    *,
    shared: Callable[[str], tuple[Worker, str]],
    client: Celeriac,
    broker: Broker,
    runs_dir: Path,
) -> None:
    worker, queue = shared(pool)
    pid = worker.process.pid
    key = new_key()
    task_id, letter = await _run_counted(broker, queue, worker, task, key)
    assert letter.reason is DeadLetterReason.MAX_RETRIES
    assert letter.error.startswith(exc_type), letter.error
    record = await final_record(client, task_id, worker)
    assert record.state is TaskState.FAILURE and record.exc_type == exc_type, record
    await settled(broker, queue, worker)
    assert runs(runs_dir, key) == 1
    await keeps_consuming(client, queue, worker, pid)


# Chains whose next step cannot be sent -----------------------------------------------------

CONTINUATIONS = [
    ("queue-with-a-space", {"queue": "Bad Queue"}, "Bad Queue"),
    ("countdown-1e300", {"countdown": 1e300}, "countdown"),
    ("unknown-option-priority", {"priority": 9}, "priority"),
]


@pytest.mark.parametrize(("options", "fragment"), [c[1:] for c in CONTINUATIONS],
                         ids=[c[0] for c in CONTINUATIONS])  # fmt: skip
async def test_a_chain_step_that_cannot_be_sent_ends_the_chain(
    options: dict[str, Any],
    fragment: str,
    *,
    shared: Callable[[str], tuple[Worker, str]],
    client: Celeriac,
    broker: Broker,
    runs_dir: Path,
) -> None:
    worker, queue = shared("asyncio")
    pid = worker.process.pid
    key, first_id, step_id = new_key(), f"first-{uuid.uuid4().hex}", f"step-{uuid.uuid4().hex}"
    chain = [{"task": "h.ok", "args": [], "options": {"task_id": step_id, **options}}]
    after = await dlq_last_seq(broker, queue)
    body = dumps(envelope(queue, first_id, "h.step", [key], chain=chain))
    msg_id = await publish_raw(broker, queue, body)
    letter, _ = await wait_letter(broker, queue, msg_id, worker, after)
    assert letter.reason is DeadLetterReason.INVALID_CONTINUATION
    assert "InvalidContinuation" in letter.error and fragment in letter.error, letter.error
    first = await final_record(client, first_id, worker)
    assert first.state is TaskState.SUCCESS and first.result == key
    step = await final_record(client, step_id, worker)
    assert step.state is TaskState.FAILURE
    assert step.error and "InvalidContinuation" in step.error, step.error
    await settled(broker, queue, worker)
    assert runs(runs_dir, key) == 1
    await keeps_consuming(client, queue, worker, pid)


# Crashes, maxDeliveries and shutdown (workers of the test's own) ---------------------------


async def test_a_task_that_kills_its_worker_is_dead_lettered_as_poison(
    start_worker, client: Celeriac, broker: Broker, queue: str, runs_dir: Path
) -> None:
    await declare_queue(broker, queue, ack_wait=2.0)
    workers = [start_worker(queue, concurrency=1)]
    key, task_id = new_key(), f"poison-{uuid.uuid4().hex}"
    # h.crash: max_retries=1, os._exit(1) on the asyncio pool: two runs, no outcome.
    msg_id = await publish_raw(broker, queue, dumps(envelope(queue, task_id, "h.crash", [key])))

    async def dead_lettered() -> tuple[DeadLetter, bytes] | None:
        found = await find_letter(broker, queue, msg_id)
        if found is None and not workers[-1].process.alive():
            assert runs(runs_dir, key) <= 2, "h.crash ran a third time"
            workers.append(start_worker(queue, concurrency=1, wait=False))
        return found

    letter, _ = await await_until(
        dead_lettered, timeout=60, what="the poison dead letter", interval=0.05
    )
    assert letter.reason is DeadLetterReason.POISON
    assert "ended without an outcome" in letter.error, letter.error
    assert letter.task_id == task_id and letter.deliveries == 3
    assert runs(runs_dir, key) == 2
    record = await final_record(client, task_id, None)
    assert record.state is TaskState.FAILURE and record.exc_type == "PoisonMessage"
    survivor = workers[-1]
    assert len(workers) == 3 and not any(w.process.alive() for w in workers[:2])
    await settled(broker, queue, survivor)
    assert runs(runs_dir, key) == 2
    await keeps_consuming(client, queue, survivor, survivor.process.pid)


async def test_max_deliveries_shorter_than_retries_dead_letters_on_the_last_delivery(
    start_worker, client: Celeriac, broker: Broker, queue: str, runs_dir: Path
) -> None:
    await declare_queue(broker, queue, ack_wait=2.0, max_deliveries=2)
    worker = start_worker(queue)
    pid = worker.process.pid
    key = new_key()
    # h.always_fail: max_retries=5, backoff 0.1 s; the consumer delivers twice only.
    task_id, letter = await _run_counted(broker, queue, worker, "h.always_fail", key)
    assert letter.reason is DeadLetterReason.MAX_DELIVERIES
    assert "maxDeliveries" in letter.error and "ValueError" in letter.error, letter.error
    assert letter.deliveries == 2
    record = await final_record(client, task_id, worker)
    assert record.state is TaskState.FAILURE and record.exc_type == "ValueError"
    await settled(broker, queue, worker)
    assert runs(runs_dir, key) == 2
    await keeps_consuming(client, queue, worker, pid)


async def test_deliveries_exhausted_by_crashes_are_dead_lettered_by_a_live_worker(
    start_worker, client: Celeriac, broker: Broker, queue: str, runs_dir: Path
) -> None:
    await declare_queue(broker, queue, ack_wait=2.0, max_deliveries=2)
    workers = [start_worker(queue, concurrency=1)]
    key, task_id = new_key(), f"exhausted-{uuid.uuid4().hex}"
    # h.crash10: max_retries=10, os._exit(1): only maxDeliveries (2) can end it. After
    # its two deliveries JetStream stops delivering it and publishes an advisory (when a
    # pull request is waiting); the fresh worker started after the second death takes it.
    msg_id = await publish_raw(broker, queue, dumps(envelope(queue, task_id, "h.crash10", [key])))

    async def dead_lettered() -> tuple[DeadLetter, bytes] | None:
        found = await find_letter(broker, queue, msg_id)
        if found is None and not workers[-1].process.alive():
            assert runs(runs_dir, key) <= 2, "h.crash10 ran a third time"
            workers.append(start_worker(queue, concurrency=1, wait=False))
        return found

    letter, _ = await await_until(
        dead_lettered, timeout=60, what="the dead letter from the advisory", interval=0.05
    )
    survivor = workers[-1]
    assert letter.reason is DeadLetterReason.POISON
    assert "maxDeliveries" in letter.error, letter.error
    assert letter.task_id == task_id and letter.deliveries == 2
    assert letter.worker and letter.worker.endswith(f"-{survivor.process.pid}"), letter.worker
    assert runs(runs_dir, key) == 2
    assert len(workers) == 3 and not any(w.process.alive() for w in workers[:2])
    record = await final_record(client, task_id, survivor)
    assert record.state is TaskState.FAILURE and record.exc_type == "PoisonMessage"
    # Deleted from the work stream, not left there until the stream's age limit.
    await settled(broker, queue, survivor)
    assert runs(runs_dir, key) == 2
    await keeps_consuming(client, queue, survivor, survivor.process.pid)


async def test_sigterm_with_a_hung_sync_task_exits_and_the_task_comes_back(
    start_worker, client: Celeriac, broker: Broker, queue: str, runs_dir: Path
) -> None:
    worker = start_worker(queue, pool="threads", concurrency=1, extra=("--drain-timeout", "2"))
    key = new_key()
    result = await client.asend_task("h.hang_once", [key], queue=queue)
    await await_until(lambda: runs(runs_dir, key) == 1, timeout=15, what="the task to hang")
    began = time.monotonic()
    worker.signal(signal.SIGTERM)
    code = await asyncio.to_thread(worker.wait_exit, 15)
    took = time.monotonic() - began
    print(f"\nworker exited {code} {took:.1f} s after SIGTERM (drain timeout 2 s)")
    assert took < 2 + 5, took
    assert code == 0, worker.log()[-3000:]
    # NAKed: with the default 30 s ack_wait, only a NAK brings it back this soon.
    second = start_worker(queue, pool="threads", concurrency=1)
    assert await result.aget(timeout=10) == "finished on a later run"
    assert runs(runs_dir, key) == 2
    await settled(broker, queue, second)
    await keeps_consuming(client, queue, second, second.process.pid)
