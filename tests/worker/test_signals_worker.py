"""Signals sent by real workers, revoke(terminate=True) of running tasks in each pool,
and a worker started with Celery's command line.

The workers run ``apps/sigtasks.py``, whose receivers and tasks write JSON lines to a
file of this test's own (``$SIGNALS_LOG``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from celeriac_devenv.processes import free_port, spawn

from celeriac import inspection
from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.canvas import chain
from celeriac.protocol import names
from celeriac.protocol.envelope import ResultRecord
from celeriac.protocol.states import TaskState
from tests.support import WORKER_APPS, StartWorker, Worker, WorkerApp, await_until

pytestmark = pytest.mark.integration


@pytest.fixture
def signals_log(tmp_path: Path) -> Path:
    """Where the receivers and tasks of this test's workers write."""
    return tmp_path / "signals.jsonl"


@pytest.fixture
def worker_app(signals_log: Path) -> WorkerApp:
    """Workers of these tests run ``sigtasks``."""
    return WorkerApp("sigtasks", WORKER_APPS, env={"SIGNALS_LOG": str(signals_log)})


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every line written so far (a line still being written fails to parse: not yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def line(path: Path, what: str, within: float = 20, **fields: Any) -> dict[str, Any]:
    """The first line whose values include ``fields``, waited for."""

    def found() -> dict[str, Any] | None:
        for entry in read_lines(path):
            if all(entry.get(key) == value for key, value in fields.items()):
                return entry
        return None

    return await await_until(found, timeout=within, what=what)


async def final(client: Celeriac, task_id: str, within: float = 20) -> ResultRecord:
    """The record of ``task_id`` once it is SUCCESS, FAILURE or REVOKED."""

    async def ready() -> ResultRecord | None:
        record = await client.AsyncResult(task_id).arecord()
        return record if record is not None and record.state.ready else None

    return await await_until(ready, timeout=within, what=f"{task_id} to end")


async def terminated(client: Celeriac, task_id: str, within: float = 20) -> ResultRecord:
    """The REVOKED record the worker writes for a terminated task.

    ``revoke()`` itself writes REVOKED when the id has no record yet (a task that
    began less than 50 ms ago has none): the worker's record replaces it.
    """

    async def stopped() -> ResultRecord | None:
        record = await client.AsyncResult(task_id).arecord()
        if record is None or record.state is not TaskState.REVOKED:
            return None
        return record if (record.error or "").startswith("terminated") else None

    return await await_until(stopped, timeout=within, what=f"{task_id} to be terminated")


async def settled(broker: Broker, queue: str) -> None:
    """Wait until the queue holds nothing: every message acked or terminated."""

    async def empty() -> bool:
        info = await broker.js.consumer_info(names.stream_name(queue), names.CONSUMER_NAME)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await await_until(empty, timeout=15, what=f"queue {queue} to be settled")


async def test_task_and_worker_signals_carry_celery_arguments(
    start_worker: StartWorker, client: Celeriac, queue: str, signals_log: Path
) -> None:
    worker = start_worker(queue)
    ready = await line(signals_log, "worker_ready", signal="worker_ready")
    added = await client.asend_task("sig.add", [2, 3], queue=queue)
    assert await added.aget(timeout=20) == 5  # a receiver that raises changes nothing
    failed = await client.asend_task("sig.fail", ["broken on purpose"], queue=queue)
    record = await final(client, failed.id)
    assert record.state is TaskState.FAILURE
    await line(signals_log, "the async postrun", signal="async_postrun", task_id=failed.id)

    prerun = await line(signals_log, "prerun", signal="task_prerun", task_id=added.id)
    assert (prerun["sender"], prerun["task"], prerun["signal_name"]) == (
        "sig.add", "sig.add", "task_prerun",
    )  # fmt: skip
    assert (prerun["args"], prerun["kwargs"]) == ([2, 3], {})
    assert prerun["pid"] == worker.process.pid  # the worker's main process
    assert prerun["main_thread"] is False  # a plain receiver runs off the event loop
    post = await line(signals_log, "postrun", signal="task_postrun", task_id=added.id)
    assert (post["retval"], post["state"]) == (5, "SUCCESS")
    post = await line(signals_log, "postrun", signal="task_postrun", task_id=failed.id)
    assert (post["state"], post["retval_type"]) == ("FAILURE", "ValueError")

    failure = await line(signals_log, "task_failure", signal="task_failure")
    assert failure["task_id"] == failed.id and failure["sender"] == "sig.fail"
    assert failure["exception_type"] == "ValueError" and failure["isinstance_value_error"]
    assert failure["exception"] == "broken on purpose"
    assert "ValueError: broken on purpose" in failure["traceback"]
    assert failure["einfo_traceback"] == failure["traceback"]
    assert failure["args"] == ["broken on purpose"]

    entries = read_lines(signals_log)
    assert [e["task_id"] for e in entries if e.get("signal") == "prerun_add_only"] == [added.id]
    assert [e["task_id"] for e in entries if e.get("signal") == "task_failure"] == [failed.id]
    assert "signal task_prerun: receiver sigtasks.broken raised" in worker.log()
    assert "receiver broken on purpose" in worker.log()

    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(30) == 0
    shutdown = await line(signals_log, "worker_shutdown", signal="worker_shutdown")
    assert shutdown["sender"] == ready["sender"] == record.worker
    order = [e.get("signal") for e in read_lines(signals_log)]
    assert order.index("worker_ready") < order.index("task_prerun")
    assert order.index("worker_shutdown") == len(order) - 1


async def test_postrun_and_failure_tell_what_the_worker_decided(
    start_worker: StartWorker, client: Celeriac, queue: str, signals_log: Path
) -> None:
    start_worker(queue)
    # autoretry_for with max_retries=1: a retry, then a failure for good.
    auto = await client.asend_task("sig.auto", ["still broken"], queue=queue)
    record = await final(client, auto.id)
    assert record.state is TaskState.FAILURE and record.retries == 1
    await line(signals_log, "the last postrun", signal="task_postrun", task_id=auto.id,
               state="FAILURE")  # fmt: skip
    entries = read_lines(signals_log)
    posts = [e for e in entries if e.get("signal") == "task_postrun" and e["task_id"] == auto.id]
    assert sorted(e["state"] for e in posts) == ["FAILURE", "RETRY"]
    assert {e["retval_type"] for e in posts} == {"ValueError"}
    [failure] = [e for e in entries if e.get("signal") == "task_failure"]
    assert (failure["task_id"], failure["exception"]) == (auto.id, "still broken")
    assert failure["exception_type"] == "ValueError" and failure["isinstance_value_error"]

    # A result that cannot be stored fails the task: so say the signals.
    bad = await client.asend_task("sig.unstorable", queue=queue)
    record = await final(client, bad.id)
    assert record.state is TaskState.FAILURE and record.exc_type == "TypeError"
    post = await line(signals_log, "postrun", signal="task_postrun", task_id=bad.id)
    assert (post["state"], post["retval_type"]) == ("FAILURE", "TypeError")
    failure = await line(signals_log, "task_failure", signal="task_failure", task_id=bad.id)
    assert failure["exception_type"] == "TypeError" and failure["is_task_error"]
    assert "not JSON-serializable" in failure["exception"]


@pytest.mark.parametrize(("pool", "stand_in"), [("asyncio", False), ("processes", True)])
async def test_a_users_exception_keeps_its_type_in_task_failure_and_on_failure(
    start_worker: StartWorker, client: Celeriac, queue: str, signals_log: Path,
    *, pool: str, stand_in: bool,
) -> None:  # fmt: skip
    # sigerrors.TimeoutError holds a lock: a processes-pool child cannot send it back,
    # so the worker rebuilds it from the record (sigerrors is an allowed module).
    start_worker(queue, pool=pool, concurrency=1)
    failed = await client.asend_task("sig.user_timeout", ["supplier too slow"], queue=queue)
    record = await final(client, failed.id)
    assert (record.state, record.exc_type, record.exc_module) == (
        TaskState.FAILURE, "TimeoutError", "sigerrors",
    )  # fmt: skip
    failure = await line(signals_log, "task_failure", signal="task_failure", task_id=failed.id)
    hook = await line(signals_log, "on_failure", hook="on_failure", task_id=failed.id)
    for seen in (failure, hook):
        assert (seen["exception_type"], seen["exception"]) == ("TimeoutError", "supplier too slow")
        assert seen["is_user_timeout"] and not seen["is_builtin_timeout"]
        assert seen["is_task_error"] is stand_in
        assert seen["einfo_type"] == "TimeoutError"
    assert "supplier too slow" in failure["traceback"]


@pytest.mark.parametrize("task", ["sig.asleep", "sig.asleep_limited"])
async def test_terminate_cancels_a_running_async_task(
    start_worker: StartWorker, client: Celeriac, broker: Broker, queue: str, signals_log: Path,
    *, task: str,
) -> None:  # fmt: skip
    start_worker(queue)
    first = client.signature(task, [60, "a1"], queue=queue)
    then = client.signature("sig.add", [1], queue=queue)
    last = await chain(first, then).aapply_async()
    assert last.parent is not None
    running = last.parent
    await line(signals_log, "the task to start", event="started", marker="a1")

    await running.arevoke("no longer wanted", terminate=True)
    record = await terminated(client, running.id, within=15)
    assert record.error == "terminated (SIGTERM): no longer wanted"
    await line(signals_log, "the task to see CancelledError", event="cancelled", marker="a1")
    assert not [e for e in read_lines(signals_log) if e.get("event") == "finished"]
    post = await line(signals_log, "postrun", signal="task_postrun", task_id=running.id)
    assert (post["state"], post["retval_type"]) == ("REVOKED", "TaskRevokedError")
    # What depended on it fails as for any revoke; nothing is retried or redelivered.
    rest = await final(client, last.id)
    assert rest.state is TaskState.FAILURE and "terminated" in (rest.error or "")
    await settled(broker, queue)

    again = await client.asend_task("sig.add", [1, 2], queue=queue)
    assert await again.aget(timeout=20) == 3  # the worker goes on serving


async def test_admin_revoke_terminate(
    start_worker: StartWorker, client: Celeriac, queue: str, nats_url: str, signals_log: Path
) -> None:
    start_worker(queue)
    running = await client.asend_task("sig.asleep", [60, "c1"], queue=queue)
    await line(signals_log, "the task to start", event="started", marker="c1")
    environ = {**os.environ, "CELERIAC_NATS_URL": nats_url}
    command = [sys.executable, "-m", "celeriac", "revoke", running.id, "--terminate"]
    refused = await asyncio.to_thread(
        subprocess.run, [*command, "--signal", "SIGINT"], capture_output=True, text=True,
        env=environ, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "--signal" in refused.stderr and "SIGKILL" in refused.stderr
    done = await asyncio.to_thread(
        subprocess.run, [*command, "-s", "KILL"], capture_output=True, text=True, env=environ,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "terminating it with SIGKILL" in done.stdout
    record = await terminated(client, running.id)
    assert record.error == "terminated (SIGKILL): revoked from the command line"
    await line(signals_log, "the task to see CancelledError", event="cancelled", marker="c1")


async def test_terminate_kills_a_process_pool_child_which_is_replaced(
    start_worker: StartWorker, client: Celeriac, broker: Broker, queue: str, signals_log: Path
) -> None:
    worker = start_worker(queue, pool="processes", concurrency=1)
    running = await client.asend_task("sig.sleep", [60, "p1"], queue=queue)
    started = await line(signals_log, "the task to start", event="started", marker="p1")
    child = started["pid"]
    assert child != worker.process.pid
    init = await line(signals_log, "worker_process_init", signal="worker_process_init")
    assert init["pid"] == child and init["sender"] is None

    await running.arevoke(terminate=True)
    record = await terminated(client, running.id, within=15)
    assert record.error == "terminated (SIGTERM): revoked"
    await await_until(lambda: not Path(f"/proc/{child}").exists(), timeout=10,
                      what="the child process to be gone")  # fmt: skip
    await settled(broker, queue)

    after = await client.asend_task("sig.sleep", [0, "p2"], queue=queue)
    assert await after.aget(timeout=30) == 0
    replacement = await line(signals_log, "the next task", event="finished", marker="p2")
    assert replacement["pid"] != child
    inits = [e["pid"] for e in read_lines(signals_log) if e.get("signal") == "worker_process_init"]
    assert replacement["pid"] in inits

    # A child that ignores SIGTERM: signal="SIGKILL" stops it at once...
    stubborn = await client.asend_task("sig.stubborn", [60, "p3"], queue=queue)
    await line(signals_log, "the stubborn task to start", event="started", marker="p3")
    await stubborn.arevoke(terminate=True, signal="SIGKILL")
    record = await terminated(client, stubborn.id, within=15)
    assert record.error == "terminated (SIGKILL): revoked"
    assert "SIGKILL sent to its child process" in worker.log()

    # ...and the default SIGTERM is followed by SIGKILL after the grace period.
    stubborn = await client.asend_task("sig.stubborn", [60, "p4"], queue=queue)
    await line(signals_log, "the stubborn task to start", event="started", marker="p4")
    await stubborn.arevoke(terminate=True)
    record = await terminated(client, stubborn.id, within=30)
    assert record.error == "terminated (SIGTERM): revoked"
    assert "outlived SIGTERM" in worker.log()
    assert not [e for e in read_lines(signals_log) if e.get("event") == "finished"
                and e.get("marker") in ("p1", "p3", "p4")]  # fmt: skip

    last = await client.asend_task("sig.add", [2, 2], queue=queue)
    assert await last.aget(timeout=30) == 4


async def test_terminate_on_a_thread_waits_for_the_end_then_revokes(
    start_worker: StartWorker, client: Celeriac, broker: Broker, queue: str, signals_log: Path
) -> None:
    worker = start_worker(queue, pool="threads", concurrency=2)
    running = await client.asend_task("sig.sleep", [3, "t1"], queue=queue)
    await line(signals_log, "the task to start", event="started", marker="t1")
    await running.arevoke(terminate=True)
    await await_until(lambda: "cannot terminate sig.sleep" in worker.log(), timeout=10,
                      what="the worker to say it cannot stop a thread")  # fmt: skip

    record = await terminated(client, running.id, within=20)
    assert record.error is not None and record.error.startswith("terminated (SIGTERM): revoked")
    assert "a thread cannot be stopped" in record.error
    # It ran to its end; its value was discarded.
    await line(signals_log, "the task to finish", event="finished", marker="t1")
    await settled(broker, queue)
    again = await client.asend_task("sig.add", [5, 5], queue=queue)
    assert await again.aget(timeout=20) == 10


async def test_the_celery_command_line_starts_a_named_worker(
    tmp_path: Path, nats_url: str, client: Celeriac, queue: str, signals_log: Path
) -> None:
    port = free_port()
    argv = [
        sys.executable, "-m", "celeriac", "-A", "sigtasks", "worker", "-P", "threads", "-c",
        "2", "-n", "w1@%h", "-Q", queue, "-l", "info", "--health-port", str(port),
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(WORKER_APPS), os.environ.get("PYTHONPATH", "")]),
        "CELERIAC_NATS_URL": nats_url,
        "SIGNALS_LOG": str(signals_log),
    }
    worker = Worker(spawn("celery-style", argv, log_dir=tmp_path, env=env), port)
    try:
        worker.wait_ready()
        name = f"w1@{socket.gethostname()}"
        result = await client.asend_task("sig.add", [20, 22], queue=queue)
        assert await result.aget(timeout=20) == 42
        record = await result.arecord()
        assert record is not None and record.worker == name
        ready = await line(signals_log, "worker_ready", signal="worker_ready")
        assert ready["sender"] == name

        async def listed() -> Any:
            found = await inspection.live_workers((await client.broker()).js)
            return next((w for w in found if w.name == name), None)

        seen = await await_until(listed, timeout=20, what="the worker in the registry")
        assert (seen.pool, seen.concurrency, seen.queues) == ("threads", 2, [queue])
    finally:
        worker.process.stop(grace=5)
