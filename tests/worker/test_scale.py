"""Volume and outages: a NATS restart mid-run and 10,000 tasks over two workers lose nothing."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid

import pytest
from celeriac_devenv.nats import NatsServer
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.protocol import names
from tests.support import await_until

pytestmark = pytest.mark.integration


async def test_nats_restart_mid_run_loses_nothing(
    start_worker, private_nats: NatsServer, queue: str
) -> None:
    app = Celeriac("restart-client", nats_url=private_nats.url)
    try:
        worker = start_worker(queue, concurrency=8, url=private_nats.url)
        first = [
            await app.asend_task("w.asleep", [0.05], queue=queue, task_id=f"a-{i}")
            for i in range(100)
        ]
        # Restart while the first batch is being worked on.
        await await_until(first[10].arecord, timeout=15, what="the first batch to start")
        await asyncio.to_thread(private_nats.restart)
        second = [
            await app.asend_task("w.add", [i, 1], queue=queue, task_id=f"b-{i}") for i in range(100)
        ]
        for result in first:
            assert await result.aget(timeout=40) == 0.05
        for i, result in enumerate(second):
            assert await result.aget(timeout=40) == i + 1
        worker.wait_ready(20)
        assert worker.get("/healthz")[0] == 200
    finally:
        await app.aclose()


async def _read_all(broker: Broker, stream: str, subject: str) -> list[bytes]:
    config = ConsumerConfig(ack_policy=AckPolicy.NONE)
    sub = await broker.js.pull_subscribe(subject, stream=stream, config=config)
    data: list[bytes] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(1000, timeout=1)
            except TimeoutError:
                return data
            data.extend(m.data for m in msgs)
    finally:
        await sub.unsubscribe()


async def test_ten_thousand_tasks_two_workers(
    start_worker, client: Celeriac, broker: Broker, queue: str
) -> None:
    total = 10_000
    run = uuid.uuid4().hex[:8]
    done_stream = f"WDONE_{run}"
    await broker.js.add_stream(StreamConfig(name=done_stream, subjects=[f"wdone.{run}"]))
    try:
        started = time.monotonic()
        signatures = [client.signature("w.mark", [run], queue=queue) for _ in range(total)]
        for i in range(0, total, 1000):
            await client.asend_many(signatures[i : i + 1000])
        published = time.monotonic() - started
        workers = [start_worker(queue, concurrency=64) for _ in range(2)]

        async def drained() -> bool:
            info = await broker.js.consumer_info(names.stream_name(queue), names.CONSUMER_NAME)
            done = await broker.js.stream_info(done_stream)
            return (
                info.num_pending == 0 and info.num_ack_pending == 0 and done.state.messages >= total
            )

        await await_until(drained, timeout=120, what="all tasks to be done", interval=0.5)
        elapsed = time.monotonic() - started
        ids = await _read_all(broker, done_stream, f"wdone.{run}")
        counts = collections.Counter(ids)
        duplicates = len(ids) - len(counts)
        print(
            f"\n10,000 tasks: published in {published:.1f}s, all done after {elapsed:.1f}s; "
            f"{len(counts)} distinct ids, {duplicates} duplicate execution(s)"
        )
        assert len(counts) == total
        assert all(w.process.alive() for w in workers)
    finally:
        await broker.js.delete_stream(done_stream)
