"""``--log-format json``: every line a worker writes is one JSON object, and the lines a
task logs name the task, its queue and the worker, in each kind of pool."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from celeriac.app import Celeriac
from celeriac.protocol.workers import WORKER_NAME_ENV
from tests.support import WORKER_APPS, StartWorker, WorkerApp, await_until

pytestmark = pytest.mark.integration


@pytest.fixture
def worker_app() -> WorkerApp:
    return WorkerApp("logtasks", WORKER_APPS)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON object (fails on the first line that is not one)."""
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(lines[-1], dict), line
    return lines


@pytest.mark.parametrize(
    ("pool", "task"),
    [("asyncio", "l.asay"), ("asyncio", "l.say"), ("threads", "l.say"), ("processes", "l.say")],
)
async def test_json_lines_name_the_task_queue_and_worker(
    start_worker: StartWorker, client: Celeriac, queue: str, pool: str, task: str
) -> None:
    name = f"w-{uuid.uuid4().hex[:8]}"
    worker = start_worker(
        queue, pool=pool, concurrency=2, extra=["--log-format", "json"], env={WORKER_NAME_ENV: name}
    )
    marker = uuid.uuid4().hex
    result = await client.asend_task(task, [marker], queue=queue)
    assert await result.aget(timeout=30) == marker

    def task_lines() -> list[dict[str, Any]] | None:
        lines = [ln for ln in json_lines(worker.log()) if marker in ln["message"]]
        return lines if len(lines) == 2 else None

    said, caught = await await_until(task_lines, timeout=10, what="the task's two log lines")
    for line in (said, caught):
        assert line["task_id"] == result.id
        assert (line["task"], line["queue"], line["worker"]) == (task, queue, name)
        assert line["logger"] == "logtasks"
        assert line["time"].endswith("Z")
    assert (said["level"], said["message"]) == ("INFO", f"saying {marker}")
    assert "exc" not in said
    assert caught["level"] == "ERROR"
    assert caught["exc"].startswith("Traceback") and f"ValueError: broken {marker}" in caught["exc"]
    # Lines outside a task name the worker only; every line has the four base fields.
    lines = json_lines(worker.log())
    assert all({"time", "level", "logger", "message"} <= set(ln) for ln in lines)
    startup = [ln for ln in lines if "task_id" not in ln]
    assert startup and all(ln.get("worker") == name for ln in startup)


async def test_text_format_stays_the_default(
    start_worker: StartWorker, client: Celeriac, queue: str
) -> None:
    worker = start_worker(queue)
    marker = uuid.uuid4().hex
    result = await client.asend_task("l.say", [marker], queue=queue)
    assert await result.aget(timeout=30) == marker

    def said() -> str | None:
        return next((ln for ln in worker.log().splitlines() if f"saying {marker}" in ln), None)

    line = await await_until(said, timeout=10, what="the task's log line")
    assert f"[task {result.id}] logtasks: saying {marker}" in line
    assert not line.startswith("{")


def test_a_wrong_log_format_is_one_sentence(start_worker: StartWorker, queue: str) -> None:
    worker = start_worker(queue, env={"CELERIAC_LOG_FORMAT": "yaml"}, wait=False)
    assert worker.wait_exit(timeout=30) == 2
    assert worker.log().strip() == (
        "celeriac worker: error: $CELERIAC_LOG_FORMAT must be text or json, not 'yaml'"
    )
