"""A worker through a NATS restart: tasks sent right after it start at once (no pull
request is replayed into an abandoned inbox), and the outage is logged in two lines."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from celeriac_devenv.nats import NatsServer

from celeriac.app import Celeriac
from celeriac.async_result import AsyncResult
from celeriac.broker import Broker
from celeriac.protocol import names
from celeriac.worker_runtime.delivery import ack_position
from celeriac.worker_runtime.fetching import PullRequester
from tests.support import StartWorker, await_until

pytestmark = pytest.mark.integration

# Outages longer than a pull request waits for its reply (expires 2 s + 2 s grace). Before
# the fix, the 15 s one always had a request buffered during the outage, given up on, and
# sent on reconnect into an inbox no longer read: its messages waited out ack_wait.
OUTAGE = 5.0
LONG_OUTAGE = 15.0
# Every task must be done within this, far below the consumer's 30 s ack_wait.
BOUND = 15.0


@pytest.fixture
async def private_client(private_nats: NatsServer) -> AsyncIterator[Celeriac]:
    """An app on the test's own nats-server."""
    app = Celeriac("reconnect-client", nats_url=private_nats.url)
    yield app
    await app.aclose()


async def _outage(private_nats: NatsServer, client: Celeriac, seconds: float) -> None:
    """Stop the server for ``seconds``, start it again (same port and store), and wait
    for the client to be reconnected."""
    await asyncio.to_thread(private_nats.stop)
    await asyncio.sleep(seconds)  # the outage itself, not a wait for a condition
    await asyncio.to_thread(private_nats.start)
    broker = await client.broker()
    await await_until(lambda: broker.nc.is_connected, timeout=10, what="the client to reconnect")


@pytest.mark.parametrize("outage", [OUTAGE, LONG_OUTAGE])
async def test_tasks_sent_after_a_nats_restart_start_promptly(
    outage: float,
    start_worker: StartWorker,
    private_nats: NatsServer,
    private_client: Celeriac,
    queue: str,
) -> None:
    start_worker(queue, concurrency=8, url=private_nats.url)
    warm = await private_client.asend_task("w.add", [1, 1], queue=queue)
    assert await warm.aget(timeout=15) == 2
    await _outage(private_nats, private_client, outage)

    # 60 tasks over the first 3 seconds after the restart, each timed from its submit.
    sent: dict[str, float] = {}
    results: list[AsyncResult] = []
    run = uuid.uuid4().hex[:8]
    for i in range(60):
        sent[f"{run}-{i}"] = time.time()
        results.append(
            await private_client.asend_task("w.add", [i, 1], queue=queue, task_id=f"{run}-{i}")
        )
        await asyncio.sleep(0.05)  # the load's shape: a steady trickle, not a wait

    latencies = []
    for i, result in enumerate(results):
        assert await result.aget(timeout=BOUND) == i + 1
        record = await result.arecord()
        assert record is not None and record.date_done is not None
        latencies.append(record.date_done.timestamp() - sent[result.id])
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    print(
        f"\nsubmit -> done after a {outage:g} s outage: p50 {statistics.median(latencies):.3f} s, "
        f"p99 {p99:.3f} s, max {max(latencies):.3f} s ({len(latencies)} tasks)"
    )
    assert max(latencies) < BOUND


async def test_an_outage_is_logged_once(
    start_worker: StartWorker,
    private_nats: NatsServer,
    private_client: Celeriac,
    queue: str,
) -> None:
    worker = start_worker(queue, url=private_nats.url)
    assert await (await private_client.asend_task("w.add", [1, 1], queue=queue)).aget(15) == 2
    before = len(worker.log().splitlines())
    await _outage(private_nats, private_client, OUTAGE)
    await await_until(
        lambda: "reconnected to NATS" in worker.log(), timeout=10, what="the reconnect log line"
    )
    assert await (await private_client.asend_task("w.add", [2, 2], queue=queue)).aget(15) == 4

    # Lines not about a task: what the worker said about the outage.
    lines = [line for line in worker.log().splitlines()[before:] if "[task -]" in line]
    print("\n" + "\n".join(lines))
    assert "Traceback" not in worker.log()
    warnings = [line for line in lines if " WARNING " in line or " ERROR " in line]
    assert len(warnings) == 1
    assert f"disconnected from NATS at {private_nats.url}; reconnecting" in warnings[0]
    reconnected = [line for line in lines if "reconnected to NATS" in line]
    assert len(reconnected) == 1 and " INFO " in reconnected[0]
    assert f"reconnected to NATS at {private_nats.url} after" in reconnected[0]
    assert len(lines) <= 4  # today exactly those two


async def test_a_delivery_for_a_request_given_up_on_goes_back_at_once(
    client: Celeriac, broker: Broker, queue: str
) -> None:
    await broker.ensure_queue(queue)
    requester = PullRequester(
        broker.nc, names.stream_name(queue), names.CONSUMER_NAME, broker.connection
    )
    try:
        # The client gives up on a request the server keeps (as when the connection
        # drops, or nats-py sends a request it buffered during an outage).
        given_up = requester.pull(1, 5.0)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(given_up), 0.2)
        result = await client.asend_task("w.add", [1, 2], queue=queue)
        await await_until(lambda: requester.strays == 1, timeout=5, what="the stray NAKed")

        started = time.monotonic()
        msgs = [msg async for msg in requester.pull(1, 2.0)]
        assert time.monotonic() - started < 1.0  # not after ack_wait (30 s)
        assert len(msgs) == 1 and msgs[0].headers is not None
        assert msgs[0].headers["Nats-Msg-Id"] == result.id
        assert ack_position(msgs[0].reply)[0] == 2  # the second delivery
        await msgs[0].ack()
    finally:
        await requester.close()
