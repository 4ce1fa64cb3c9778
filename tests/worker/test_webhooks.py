"""Completion webhooks end to end: a real nats-server, a real ``celeriac worker``, a real
``celeriac webhooks`` dispatcher, and a receiver in the test that checks every delivery
with the ``standardwebhooks`` library, answering as each test scripts it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from celeriac_devenv.nats import NatsServer
from celeriac_devenv.processes import ManagedProcess, free_port, spawn
from standardwebhooks import Webhook

from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.operator import claims, queues
from celeriac.protocol import names
from celeriac.protocol.resources import TaskQueueSpec
from celeriac.protocol.states import TaskState
from celeriac.protocol.webhooks import QUEUE_WEBHOOK_KEY
from tests.support import StartWorker, await_until, wait_until
from tests.worker.test_admin import ok

pytestmark = pytest.mark.integration

OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()


@dataclass
class Arrival:
    """One POST the receiver got."""

    path: str
    at: float  # time.monotonic()
    id: str
    body: dict[str, Any]
    signatures: int
    verified_old: bool
    verified_new: bool


def _verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except Exception:
        return False
    return True


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1: records each POST, answers from ``scripts`` (per path,
    first answer first; 200 once a path's script is used up)."""

    port: int = 0
    arrivals: list[Arrival] = field(default_factory=list)
    scripts: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    # Paths that answer only after this many seconds (a receiver too slow to wait for).
    slow: dict[str, float] = field(default_factory=dict)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def at(self, path: str) -> list[Arrival]:
        return [a for a in self.arrivals if a.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers = {
            k.lower(): v for k, v in request.headers.items() if k.lower().startswith("webhook-")
        }
        self.arrivals.append(
            Arrival(
                path=request.path,
                at=time.monotonic(),
                id=headers.get("webhook-id", ""),
                body=json.loads(raw),
                signatures=len(headers.get("webhook-signature", "").split()),
                verified_old=_verifies(OLD, raw, headers),
                verified_new=_verifies(NEW, raw, headers),
            )
        )
        if request.path in self.slow:
            await asyncio.sleep(self.slow[request.path])
        script = self.scripts.get(request.path)
        status, extra = script.pop(0) if script else (200, {})
        return web.Response(status=status, headers=extra)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", recv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recv.port = runner.addresses[0][1]
    yield recv
    await runner.cleanup()


StartDispatcher = Callable[..., ManagedProcess]


@pytest.fixture
def start_dispatcher(tmp_path: Path, nats_url: str) -> Iterator[StartDispatcher]:
    """Start ``celeriac webhooks`` with the secrets ``default`` -> [NEW, OLD]; all are
    stopped afterwards."""
    secrets = tmp_path / "webhook-secrets.json"
    secrets.write_text(json.dumps({"default": [NEW, OLD]}))
    started: list[ManagedProcess] = []

    def start(*extra: str, url: str | None = None, health_port: int = 0) -> ManagedProcess:
        argv = [sys.executable, "-m", "celeriac", "webhooks", "--secrets-file", str(secrets),
                "--max-attempts", "3", "--backoff", "0.2", "--backoff-max", "0.4",
                "--timeout", "5", "--health-port", str(health_port), *extra]  # fmt: skip
        env = {**os.environ, "CELERIAC_NATS_URL": url or nats_url}
        proc = spawn(f"webhooks-{len(started)}", argv, log_dir=tmp_path, env=env)
        started.append(proc)
        wait_until(lambda: "delivering webhooks" in proc.log_path.read_text(), timeout=30,
                   what="the dispatcher to start", alive=proc)  # fmt: skip
        return proc

    yield start
    for proc in started:
        proc.stop(grace=5)


async def letters(nats_url: str, queue: str) -> list[dict[str, Any]]:
    out = await ok("dlq", "list", "-Q", queue, "--reason", "webhook_failed", "-o", "json",
                   nats_url=nats_url)  # fmt: skip
    found: list[dict[str, Any]] = json.loads(out)
    return found


async def test_succeeded_and_failed_are_delivered_once_signed_with_every_secret(
    start_worker: StartWorker,
    start_dispatcher: StartDispatcher,
    receiver: Receiver,
    client: Celeriac,
    queue: str,
) -> None:
    start_worker(queue)
    dispatcher = start_dispatcher("--allow-private")
    added = await client.asend_task("w.add", [20, 22], queue=queue, webhook=receiver.url("/ok"))
    failing = await client.asend_task(
        "w.fail", queue=queue,
        webhook={"url": receiver.url("/failed"), "events": ["failed", "dead_lettered"]},
    )  # fmt: skip
    assert await added.aget(timeout=30) == 42
    await await_until(lambda: len(receiver.at("/failed")) >= 2, timeout=30,
                      what="the failed and dead_lettered deliveries", alive=dispatcher)  # fmt: skip

    [success] = receiver.at("/ok")
    assert success.id == f"{added.id}.{success.id.split('.')[-2]}.succeeded"
    assert success.body["type"] == "task.succeeded"
    assert success.body["data"] == {"task_id": added.id, "task": "w.add", "queue": queue,
                                    "state": "SUCCESS", "result": 42}  # fmt: skip
    dead, failed = sorted(receiver.at("/failed"), key=lambda a: a.body["type"])
    assert dead.body["type"] == "task.dead_lettered"
    assert dead.body["data"]["reason"] == "max_retries"
    assert failed.body["type"] == "task.failed"
    assert failed.body["data"]["state"] == TaskState.FAILURE.value
    assert failed.body["data"]["error"] == "ValueError: always broken"
    assert failed.body["data"]["exc_type"] == "ValueError"
    assert failed.body["data"]["task_id"] == failing.id
    # Rotation: one signature per secret, and each secret alone verifies the delivery.
    for arrival in receiver.arrivals:
        assert arrival.signatures == 2
        assert arrival.verified_old and arrival.verified_new
    assert len({a.id for a in receiver.arrivals}) == 3


async def test_retries_honour_retry_after(
    start_worker: StartWorker,
    start_dispatcher: StartDispatcher,
    receiver: Receiver,
    client: Celeriac,
    queue: str,
) -> None:
    receiver.scripts["/flaky"] = [(500, {})]
    receiver.scripts["/busy"] = [(429, {"Retry-After": "2"})]
    start_worker(queue)
    dispatcher = start_dispatcher("--allow-private")
    await client.asend_task("w.add", [1, 1], queue=queue, webhook=receiver.url("/flaky"))
    await client.asend_task("w.add", [2, 2], queue=queue, webhook=receiver.url("/busy"))
    await await_until(
        lambda: len(receiver.at("/flaky")) == 2 and len(receiver.at("/busy")) == 2,
        timeout=30, what="each delivery to be tried twice", alive=dispatcher,
    )  # fmt: skip
    for path in ("/flaky", "/busy"):
        first, second = receiver.at(path)
        assert first.id == second.id  # the same webhook-id on every attempt
        assert second.verified_new and second.verified_old
    first, second = receiver.at("/busy")
    assert second.at - first.at >= 2.0
    assert "trying again" in dispatcher.log_path.read_text()


async def test_gone_and_exhausted_deliveries_are_dead_lettered_and_replayed(
    *,
    start_worker: StartWorker,
    start_dispatcher: StartDispatcher,
    receiver: Receiver,
    client: Celeriac,
    queue: str,
    nats_url: str,
) -> None:
    receiver.scripts["/gone"] = [(410, {})]
    receiver.scripts["/down"] = [(500, {})] * 3
    start_worker(queue)
    dispatcher = start_dispatcher("--allow-private")
    gone = await client.asend_task("w.add", [1, 2], queue=queue, webhook=receiver.url("/gone"))
    down = await client.asend_task("w.add", [3, 4], queue=queue, webhook=receiver.url("/down"))

    async def both() -> list[dict[str, Any]] | None:
        found = await letters(nats_url, queue)
        return found if len(found) == 2 else None

    found = await await_until(both, timeout=30, what="two webhook dead letters", alive=dispatcher)
    by_task = {letter["task_id"]: letter for letter in found}
    assert len(receiver.at("/gone")) == 1  # 410: never tried again
    assert "410 Gone" in by_task[gone.id]["error"]
    assert len(receiver.at("/down")) == 3  # --max-attempts 3
    assert "500 on the last of 3 attempt(s)" in by_task[down.id]["error"]
    assert by_task[down.id]["reason"] == "webhook_failed"

    # The receiver is back (its script is used up: 200): the replay delivers it.
    ref = by_task[down.id]["ref"]
    replayed = await ok("dlq", "replay", ref, nats_url=nats_url)
    assert replayed.startswith(f"replayed {ref}")
    await await_until(lambda: len(receiver.at("/down")) == 4, timeout=30,
                      what="the replayed delivery", alive=dispatcher)  # fmt: skip
    last = receiver.at("/down")[-1]
    assert last.id == receiver.at("/down")[0].id and last.verified_new
    assert [letter["task_id"] for letter in await letters(nats_url, queue)] == [gone.id]


async def test_private_destinations_are_refused_without_the_flag(
    start_worker: StartWorker,
    start_dispatcher: StartDispatcher,
    receiver: Receiver,
    private_nats: NatsServer,
    queue: str,
) -> None:
    url = private_nats.url
    start_worker(queue, url=url)
    start_dispatcher(url=url)
    app = Celeriac("webhook-ssrf", nats_url=url)
    try:
        literal = await app.asend_task("w.add", [1, 1], queue=queue, webhook=receiver.url("/a"))
        named = await app.asend_task(
            "w.add", [1, 2], queue=queue, webhook=receiver.url("/b", host="localhost")
        )
        assert await literal.aget(timeout=30) == 2
        found = await await_until(
            lambda: _two(letters(url, queue)), timeout=30, what="two refused webhooks"
        )
    finally:
        await app.aclose()
    by_task = {letter["task_id"]: letter for letter in found}
    assert "refused destination: 127.0.0.1 is a loopback address" in by_task[literal.id]["error"]
    assert "refused destination: localhost: " in by_task[named.id]["error"]
    assert "loopback address" in by_task[named.id]["error"]
    assert receiver.arrivals == []


async def _two(pending: Any) -> list[dict[str, Any]] | None:
    found: list[dict[str, Any]] = await pending
    return found if len(found) == 2 else None


async def test_a_taskqueue_default_applies_to_tasks_without_their_own(
    *,
    start_worker: StartWorker,
    start_dispatcher: StartDispatcher,
    receiver: Receiver,
    client: Celeriac,
    broker: Broker,
    queue: str,
) -> None:
    """``spec.webhooks`` reaches workers through the work stream's metadata, written by the
    operator's reconciliation (``queues.ensure_queue``), next to the queue's claim."""
    spec = TaskQueueSpec.model_validate(
        {"webhooks": {"url": receiver.url("/queue"), "events": ["succeeded"]}}
    )
    assert spec.webhooks is not None
    settings, owner = spec.to_queue_settings(), "ns/tq"
    await queues.ensure_queue(broker.js, queue, settings, owner, webhook=spec.webhooks.target())
    start_worker(queue)
    dispatcher = start_dispatcher("--allow-private")
    default = await client.asend_task("w.add", [5, 5], queue=queue)
    # A host name: resolved through the checking resolver, allowed by --allow-private.
    own = await client.asend_task(
        "w.add", [6, 6], queue=queue, webhook=receiver.url("/own", host="localhost")
    )
    assert await own.aget(timeout=30) == 12
    await await_until(
        lambda: receiver.at("/queue") and receiver.at("/own"), timeout=30,
        what="the default and the task's own deliveries", alive=dispatcher,
    )  # fmt: skip
    [arrival] = receiver.at("/queue")
    assert arrival.body["data"]["task_id"] == default.id and arrival.body["data"]["result"] == 10
    assert len(receiver.at("/own")) == 1  # the task's own target replaces the queue's

    # Removing spec.webhooks removes the metadata key, and the claim stays.
    report = await queues.ensure_queue(broker.js, queue, settings, owner)
    assert any(QUEUE_WEBHOOK_KEY in u for u in report.updated)
    metadata = (await broker.js.stream_info(names.stream_name(queue))).config.metadata or {}
    assert QUEUE_WEBHOOK_KEY not in metadata and metadata[claims.OWNER_KEY] == owner


async def test_slow_receivers_time_out_and_unknown_secrets_are_dead_lettered(
    *,
    start_worker: StartWorker,
    start_dispatcher: StartDispatcher,
    receiver: Receiver,
    client: Celeriac,
    queue: str,
    nats_url: str,
) -> None:
    receiver.slow["/slow"] = 3.0
    start_worker(queue)
    dispatcher = start_dispatcher("--allow-private", "--timeout", "1", "--max-attempts", "2")
    slow = await client.asend_task("w.add", [1, 0], queue=queue, webhook=receiver.url("/slow"))
    unknown = await client.asend_task(
        "w.add", [2, 0], queue=queue, webhook={"url": receiver.url("/x"), "secret": "missing"}
    )
    found = await await_until(
        lambda: _two(letters(nats_url, queue)), timeout=30, what="two dead letters",
        alive=dispatcher,
    )  # fmt: skip
    by_task = {letter["task_id"]: letter for letter in found}
    assert "no answer within 1s on the last of 2 attempt(s)" in by_task[slow.id]["error"]
    assert len(receiver.at("/slow")) == 2
    assert "no secret named 'missing'" in by_task[unknown.id]["error"]
    assert receiver.at("/x") == []


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _sample(page: str, series: str) -> float:
    """The value of one exposed series (its name and labels as written)."""
    for line in page.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not on the metrics page")


async def test_metrics_and_probes_count_what_was_delivered_and_dead_lettered(
    *,
    start_worker: StartWorker,
    start_dispatcher: StartDispatcher,
    receiver: Receiver,
    client: Celeriac,
    queue: str,
    nats_url: str,
) -> None:
    receiver.scripts["/gone"] = [(410, {})]
    start_worker(queue)
    port = free_port()
    dispatcher = start_dispatcher("--allow-private", health_port=port)
    assert _get(port, "/healthz") == (200, "ok: nats connected\n")
    await await_until(lambda: _get(port, "/readyz")[0] == 200, timeout=10, what="/readyz")
    await client.asend_task("w.add", [1, 2], queue=queue, webhook=receiver.url("/ok"))
    await client.asend_task("w.add", [3, 4], queue=queue, webhook=receiver.url("/gone"))
    await await_until(lambda: _one(letters(nats_url, queue)), timeout=30,
                      what="the 410 dead letter", alive=dispatcher)  # fmt: skip
    await await_until(lambda: receiver.at("/ok"), timeout=30, what="the delivery")

    def counted() -> str | None:
        page = _get(port, "/metrics")[1]
        done = 'celeriac_webhooks_deliveries_total{outcome="delivered",status_class="2xx"} 1.0'
        return page if done in page else None

    page = await await_until(counted, timeout=10, what="the delivery to be counted")
    deliveries = "celeriac_webhooks_deliveries_total"
    assert _sample(page, f'{deliveries}{{outcome="dead_lettered",status_class="4xx"}}') == 1
    assert _sample(page, f'{deliveries}{{outcome="retried",status_class="5xx"}}') == 0
    assert _sample(page, f'{deliveries}{{outcome="refused",status_class="none"}}') == 0
    assert _sample(page, "celeriac_webhooks_attempt_duration_seconds_count") == 2
    assert _sample(page, "celeriac_webhooks_in_flight") == 0
    assert _get(port, "/readyz") == (200, "ok: consuming webhook jobs\n")


async def _one(pending: Any) -> list[dict[str, Any]] | None:
    found: list[dict[str, Any]] = await pending
    return found if len(found) == 1 else None
