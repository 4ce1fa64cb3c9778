"""``celeriac status | inspect workers | active | registered | result | revoke | purge``
against a real NATS and real workers, run as a user runs them (a subprocess); errors are
one plain sentence."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.protocol.states import TaskState
from celeriac.protocol.workers import WORKER_NAME_ENV
from tests.support import WORKER_APPS, StartWorker, WorkerApp, await_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


async def celeriac(
    *argv: str, nats_url: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "CELERIAC_NATS_URL": nats_url, "COLUMNS": "200"}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "celeriac", *argv],
        check=False, capture_output=True, text=True, env=environ, cwd=REPO, input=stdin,
        timeout=60,
    )  # fmt: skip


async def ok(*argv: str, nats_url: str) -> str:
    done = await celeriac(*argv, nats_url=nats_url)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def status_json(nats_url: str, queue: str) -> dict[str, Any]:
    out = await ok("status", "-Q", queue, "--sample", "0", "-o", "json", nats_url=nats_url)
    document: dict[str, Any] = json.loads(out)
    return document


async def test_status_result_purge_and_workers(
    start_worker: StartWorker, client: Celeriac, broker: Broker, queue: str, nats_url: str
) -> None:
    await broker.ensure_queue(queue)
    waiting = [await client.asend_task("w.add", [i, 1], queue=queue) for i in range(5)]
    [first] = (await status_json(nats_url, queue))["queues"]
    assert first == {
        "queue": queue, "waiting": 5, "in_flight": 0, "redelivered": 0, "delayed": 0,
        "dead_letters": 0, "rate": None,
    }  # fmt: skip
    table = await ok("status", "-Q", queue, "--sample", "0", nats_url=nats_url)
    assert "Queues" in table and queue in table and "Workers" in table

    # Purging asks first; "n" keeps the tasks.
    kept = await celeriac("purge", queue, nats_url=nats_url, stdin="n\n")
    assert kept.returncode == 1 and "aborted" in kept.stderr
    assert (await status_json(nats_url, queue))["queues"][0]["waiting"] == 5
    assert f"purged 5 task(s) from queue {queue}" in await ok(
        "purge", queue, "--yes", nats_url=nats_url
    )
    assert (await status_json(nats_url, queue))["queues"][0]["waiting"] == 0
    assert await ok("result", waiting[0].id, nats_url=nats_url) == (
        f"{waiting[0].id}: PENDING (nothing stored: waiting, unknown, or expired)\n"
    )

    name = f"admin-{uuid.uuid4().hex[:8]}"
    start_worker(queue, concurrency=2, env={WORKER_NAME_ENV: name})
    done = await client.asend_task("w.add", [20, 22], queue=queue)
    assert await done.aget(timeout=30) == 42
    shown = json.loads(await ok("result", done.id, "-o", "json", nats_url=nats_url))
    assert (shown["id"], shown["state"], shown["result"]) == (done.id, "SUCCESS", 42)
    assert shown["worker"] == name
    assert "SUCCESS" in await ok("result", done.id, nats_url=nats_url)

    failed = await client.asend_task("w.fail", queue=queue)
    await await_until(
        lambda: _state_is(failed, TaskState.FAILURE), timeout=30, what="w.fail to fail"
    )
    text = await ok("result", failed.id, nats_url=nats_url)
    assert text.startswith(f"{failed.id}: FAILURE") and "Traceback" in text

    async def listed() -> list[dict[str, Any]] | None:
        out = json.loads(await ok("inspect", "workers", "-o", "json", nats_url=nats_url))
        mine = [w for w in out if w["name"] == name]
        return mine if mine and mine[0]["succeeded"] >= 1 else None

    [worker] = await await_until(listed, timeout=30, what="the worker with its counts")
    assert worker["queues"] == [queue] and worker["concurrency"] == 2
    assert name in await ok("inspect", "workers", nats_url=nats_url)


async def _state_is(result: Any, state: TaskState) -> bool:
    record = await result.arecord()
    return record is not None and record.state is state


async def test_revoke_makes_workers_skip_the_task(
    start_worker: StartWorker, client: Celeriac, broker: Broker, queue: str, nats_url: str
) -> None:
    await broker.ensure_queue(queue)
    task = await client.asend_task("w.add", [1, 1], queue=queue)
    assert f"revoked {task.id}" in await ok("revoke", task.id, nats_url=nats_url)
    start_worker(queue)
    await await_until(
        lambda: _state_is(task, TaskState.REVOKED), timeout=30, what="the task REVOKED"
    )


@pytest.mark.parametrize(
    ("argv", "sentence"),
    [
        (("status", "-Q", "no-such-queue", "--sample", "0"), "unknown queue 'no-such-queue'"),
        (("purge", "no-such-queue", "--yes"), "unknown queue 'no-such-queue'"),
        (("status", "-Q", "Bad Queue"), "invalid queue name"),
    ],
)
async def test_mistakes_are_one_sentence(
    nats_url: str, argv: tuple[str, ...], sentence: str
) -> None:
    done = await celeriac(*argv, nats_url=nats_url)
    assert done.returncode == 1
    assert done.stderr.startswith("celeriac: ") and sentence in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


async def test_an_unreachable_server_is_one_sentence() -> None:
    done = await celeriac("status", nats_url="nats://127.0.0.1:9", stdin=None)
    assert done.returncode == 1
    assert done.stderr.startswith("celeriac: cannot connect to NATS at nats://127.0.0.1:9")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("worker_app", [WorkerApp("dlqtasks", WORKER_APPS)])
async def test_inspect_active_and_registered(
    *, start_worker: StartWorker, client: Celeriac, broker: Broker, queue: str, nats_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    await broker.ensure_queue(queue)
    name = f"busy-{uuid.uuid4().hex[:8]}"
    start_worker(queue, env={WORKER_NAME_ENV: name})
    release = tmp_path / "release"
    blocked = await client.asend_task("d.block", [str(release)], queue=queue)

    async def active() -> list[dict[str, Any]] | None:
        out = json.loads(await ok("inspect", "active", "-o", "json", nats_url=nats_url))
        mine = [w for w in out if w["worker"] == name]
        return mine[0]["active"] if mine and mine[0]["active"] else None

    # The record is at most one heartbeat old: wait for the one that lists the task.
    [running] = await await_until(active, timeout=30, what="the blocked task listed")
    assert (running["id"], running["task"], running["queue"]) == (blocked.id, "d.block", queue)
    table = await ok("inspect", "active", nats_url=nats_url)
    assert blocked.id in table and "d.block" in table and "running for" in table

    registered = json.loads(await ok("inspect", "registered", "-o", "json", nats_url=nats_url))
    [mine] = [w for w in registered if w["worker"] == name]
    assert mine["registered"] == ["d.add", "d.block", "d.until_file"]
    assert "d.until_file" in await ok("inspect", "registered", nats_url=nats_url)

    release.touch()
    assert await blocked.aget(timeout=30) == "released"

    async def idle() -> bool:
        out = json.loads(await ok("inspect", "active", "-o", "json", nats_url=nats_url))
        return any(w["worker"] == name and not w["active"] for w in out)

    await await_until(idle, timeout=30, what="the worker idle again")
