"""Any language, proven in Go: examples/go-client, built with the official NATS Go client,
submits tasks by the JSON protocol of docs/protocol.md alone and reads their results.

The program is built (or found in the cache) like the other Go tools of the local
environment; a real nats-server and real ``celeriac worker`` processes run the tasks.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from celeriac_devenv.building import ensure_programs
from celeriac_devenv.nats import NatsServer
from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError

from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.protocol import names
from celeriac.protocol.envelope import TaskMessage
from tests.support import StartWorker, await_until

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "examples" / "go-client"
DOC = ROOT / "docs" / "protocol.md"


@dataclass(frozen=True)
class Run:
    """One run of the Go program."""

    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def go_client() -> Path:
    """The built Go program (built from the Go module proxy on a cold cache)."""
    return ensure_programs(["celeriac-go-client"], source=SOURCE, quiet=True)["celeriac-go-client"]


def run_go(binary: Path, *args: str, limit: float = 60) -> Run:
    """Run the program to its end (bounded by ``limit`` seconds)."""
    proc = subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=limit, check=False
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


async def arun_go(binary: Path, *args: str) -> Run:
    """``run_go`` off the event loop, so the test's own NATS connection stays served."""
    return await asyncio.to_thread(run_go, binary, *args)


def doc_snippet() -> str:
    """The Go block after the ``go-client-example`` marker in docs/protocol.md."""
    found = re.search(r"<!-- go-client-example -->\s*```go\n(.*?)```", DOC.read_text(), re.S)
    assert found, "docs/protocol.md lost its go-client-example block"
    return found.group(1)


def source_region() -> str:
    """The lines between ``// docs:begin`` and ``// docs:end`` in main.go."""
    found = re.search(
        r"// docs:begin\n(.*?)\n\s*// docs:end", (SOURCE / "main.go").read_text(), re.S
    )
    assert found, "examples/go-client/main.go lost its docs:begin/docs:end markers"
    return found.group(1)


def test_the_doc_shows_the_programs_own_lines() -> None:
    shown = textwrap.dedent(doc_snippet()).strip()
    assert shown == textwrap.dedent(source_region()).strip()
    # The lines that make it the documented protocol are in what the doc shows.
    for needle in ('"celeriac.tasks."', '"Nats-Msg-Id"', '"celeriac_results"', "Watch("):
        assert needle in shown, needle


def test_protocol_names_in_the_program_match_the_code() -> None:
    shown = doc_snippet()
    assert f'"{names.RESULTS_BUCKET}"' in shown
    assert f'"{names.task_subject("q").removesuffix("q")}"' in shown
    assert f'"{names.HDR_MSG_ID}"' in shown


def test_a_bad_flag_is_one_sentence(go_client: Path) -> None:
    run = run_go(go_client, "-task", "proj.tasks.add", "-args", "2, 3")
    assert run.code == 2
    assert run.stderr.strip() == "go-client: -args is not a JSON array: 2, 3"
    run = run_go(go_client, "-args", "[1]")
    assert (run.code, run.stderr.strip()) == (
        2,
        "go-client: -task is required (a registered task name)",
    )


def test_an_unreachable_server_is_one_sentence(go_client: Path) -> None:
    run = run_go(go_client, "-url", "nats://127.0.0.1:1", "-task", "proj.tasks.add")
    assert run.code == 1
    assert run.stderr.startswith("go-client: cannot reach NATS at nats://127.0.0.1:1: ")
    assert "goroutine" not in run.stderr and len(run.stderr.splitlines()) == 1


@pytest.mark.integration
async def test_go_submits_add_and_the_sdk_reads_the_same_result(
    go_client: Path, nats_url: str, queue: str, aapp: Celeriac, start_worker: StartWorker
) -> None:
    start_worker(queue)
    task_id = str(uuid.uuid4())
    run = await arun_go(
        go_client, "-url", nats_url, "-queue", queue, "-task", "proj.tasks.add",
        "-args", "[2, 3]", "-id", task_id, "-timeout", "30s",
    )  # fmt: skip
    assert (run.code, run.stdout, run.stderr) == (0, "5\n", "")
    result = aapp.AsyncResult(task_id)
    assert await result.aget(timeout=10) == 5
    record = await result.arecord()
    assert record is not None and record.task == "proj.tasks.add"


@pytest.mark.integration
async def test_go_reports_a_failed_task_and_exits_non_zero(
    go_client: Path, nats_url: str, queue: str, aapp: Celeriac, start_worker: StartWorker
) -> None:
    start_worker(queue)
    task_id = str(uuid.uuid4())
    run = await arun_go(
        go_client, "-url", nats_url, "-queue", queue, "-task", "cv.broken",
        "-args", "[7]", "-id", task_id, "-timeout", "30s",
    )  # fmt: skip
    assert run.code == 1 and run.stdout == ""
    assert run.stderr == f"go-client: task {task_id} failed: ValueError: broken on 7\n"
    assert await aapp.AsyncResult(task_id).astate() == "FAILURE"


@pytest.mark.integration
async def test_an_unknown_queue_is_named(go_client: Path, nats_url: str, queue: str) -> None:
    run = await arun_go(go_client, "-url", nats_url, "-queue", queue, "-task", "proj.tasks.add")
    assert run.code == 1
    assert run.stderr == (
        f'go-client: unknown queue "{queue}": no stream takes celeriac.tasks.{queue}\n'
    )


@pytest.mark.integration
async def test_the_published_message_is_the_documented_one(
    go_client: Path, nats_url: str, queue: str, aapp: Celeriac, raw_nc: Client
) -> None:
    """With no worker the program times out; the message it left is read back as a worker would."""
    await (await aapp.broker()).ensure_queue(queue)  # the queue exists, as under the operator
    task_id = str(uuid.uuid4())
    run = await arun_go(
        go_client, "-url", nats_url, "-queue", queue, "-task", "proj.tasks.add",
        "-args", "[2, 3]", "-kwargs", '{"scale": 1.5}', "-id", task_id, "-timeout", "1s",
    )  # fmt: skip
    assert run.code == 1
    assert run.stderr == f"go-client: no final result for task {task_id} within 1s\n"
    sub = await raw_nc.jetstream().pull_subscribe_bind(
        names.CONSUMER_NAME, names.stream_name(queue)
    )
    (msg,) = await sub.fetch(1, timeout=5)
    await msg.ack()
    assert msg.headers == {
        "Nats-Msg-Id": task_id,
        "Celeriac-Task": "proj.tasks.add",
        "Celeriac-Protocol": "1",
    }
    message = TaskMessage.model_validate_json(msg.data)
    assert (message.v, message.id, message.task, message.queue) == (
        1,
        task_id,
        "proj.tasks.add",
        queue,
    )
    assert (message.args, message.kwargs) == ([2, 3], {"scale": 1.5})


@pytest.mark.integration
async def test_go_waits_for_a_results_bucket_that_does_not_exist_yet(
    go_client: Path, private_nats: NatsServer, queue: str, start_worker: StartWorker
) -> None:
    """On a server where no result was ever stored, the first result creates the bucket."""
    app = Celeriac("go-client-tests", private_nats.url, default_queue=queue)
    try:
        broker = await app.broker()
        await broker.ensure_queue(queue)
        with pytest.raises(BucketNotFoundError):
            await broker.js.key_value(names.RESULTS_BUCKET)
        proc = await asyncio.create_subprocess_exec(
            str(go_client), "-url", private_nats.url, "-queue", queue,
            "-task", "proj.tasks.add", "-args", "[20, 22]", "-timeout", "60s",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            # Published and waiting: only then does a worker (and with it the bucket) come up.
            stream = names.stream_name(queue)
            await await_until(
                lambda: _messages(broker, stream), timeout=15, what="the Go client's message"
            )
            start_worker(queue, url=private_nats.url)
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert (proc.returncode, stdout, stderr) == (0, b"42\n", b"")
    finally:
        await app.aclose()


async def _messages(broker: Broker, stream: str) -> int:
    return (await broker.js.stream_info(stream)).state.messages
