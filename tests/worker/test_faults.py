"""Fault suite: workers SIGKILLed at random and a NATS outage mid-run lose no task.

Tasks are submitted by the SDK while a chaos loop SIGKILLs a random worker every 1-2 s
(and starts a replacement), and the nats-server is stopped for a few seconds and
started again. A batch is submitted during the outage; its tasks carry 16 KiB each,
more than the client's 2 MiB reconnect buffer holds, so the submit fails part way with
a ``CeleriacError`` naming task ids that may or may not have been stored (the buffered
ones reach the server after the restart). They are submitted again with the same ids
after the restart, and the work stream drops the duplicates. In the end every task id
must have a SUCCESS record whose result equals its input.

The CI-sized case runs by default; the full-size one is ``slow`` (``--run-slow``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from celeriac_devenv.nats import NatsServer
from nats.js.api import ConsumerConfig, StreamConfig

from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.exceptions import CeleriacError
from celeriac.protocol import jetstream, names
from celeriac.protocol.envelope import ResultRecord
from celeriac.protocol.states import TaskState
from tests.support import WORKER_APPS, Worker, WorkerApp, await_until

pytestmark = pytest.mark.integration


@pytest.fixture
def worker_app() -> WorkerApp:
    """Workers of this module run ``hostile_tasks`` (its ``h.echo``)."""
    return WorkerApp("hostile_tasks", WORKER_APPS)


@dataclass(frozen=True)
class Faults:
    """The size of a run and the faults injected into it."""

    tasks: int  # in all, the outage batch included
    outage_batch: int  # submitted while the nats-server is down
    chunk: int  # the producer submits this many at a time...
    chunk_every: float  # ...this often (seconds)
    chaos_seconds: float  # SIGKILLs go on this long
    kill_every: tuple[float, float]  # a random pause in this range between kills
    outage_at: float  # seconds after the start
    outage: float  # how long the nats-server stays down
    bound: float  # seconds allowed after the chaos for every task to end
    workers: int = 3
    concurrency: int = 1  # low: a backlog lasts the whole chaos, work is always in flight
    pause: float = 0.02  # each task sleeps this long
    ack_wait: float = 3.0
    outage_pad: int = 16 * 1024  # bytes of payload per task of the outage batch


CI = Faults(tasks=1500, outage_batch=200, chunk=250, chunk_every=0.5, chaos_seconds=12,
            kill_every=(1.0, 2.0), outage_at=4.0, outage=3.0, bound=60)  # fmt: skip
FULL = Faults(tasks=20_000, outage_batch=400, chunk=500, chunk_every=0.5, chaos_seconds=40,
              kill_every=(0.7, 1.4), outage_at=10.0, outage=4.0, bound=240,
              concurrency=4)  # fmt: skip


@dataclass
class Run:
    """What happened during a run, for the assertions and the printed figures."""

    faults: Faults
    queue: str
    app: Celeriac
    ids: dict[str, Any]  # task id -> its input (and expected result)
    started: float = field(default_factory=time.monotonic)
    unconfirmed: set[str] = field(default_factory=set)  # to submit again
    resubmitted: set[str] = field(default_factory=set)
    submit_errors: int = 0
    kills: int = 0
    outage_length: float = 0.0
    outage_submit_error: str = ""

    async def submit(self, chunk: list[str]) -> str:
        """Submit ``chunk`` (ids); remember the ids a CeleriacError says are unconfirmed."""
        sigs = [
            self.app.signature("h.echo", [self.ids[t]], queue=self.queue, task_id=t) for t in chunk
        ]
        try:
            await self.app.asend_many(sigs)
        except CeleriacError as exc:
            self.submit_errors += 1
            named = getattr(exc, "task_ids", None)
            unconfirmed = set(named) if named is not None else set(chunk)
            assert unconfirmed <= set(chunk), "the error names ids that were not submitted"
            self.unconfirmed |= unconfirmed
            return f"{type(exc).__name__}: {exc}"[:300]
        return ""

    async def resubmit(self, within: float = 30.0) -> None:
        """Submit every unconfirmed id again (same task ids) until all are confirmed."""

        async def confirmed() -> bool:
            pending = sorted(self.unconfirmed)
            self.unconfirmed.clear()
            for i in range(0, len(pending), self.faults.chunk):
                part = pending[i : i + self.faults.chunk]
                self.resubmitted |= set(part)
                await self.submit(part)
            return not self.unconfirmed

        await await_until(confirmed, timeout=within, what="resubmits to be confirmed", interval=0.5)


async def _declare(broker: Broker, queue: str, ack_wait: float) -> None:
    """The queue as the SDK declares it, with a short ack_wait: a killed worker's
    messages come back within seconds."""
    settings = jetstream.QueueSettings(ack_wait_seconds=ack_wait)
    await broker.js.add_stream(StreamConfig(**jetstream.work_stream_config(queue, settings)))
    await broker.js.add_stream(StreamConfig(**jetstream.dead_letter_stream_config(queue, settings)))
    await broker.js.add_consumer(
        names.stream_name(queue), ConsumerConfig(**jetstream.consumer_config(queue, settings))
    )


async def _all_results(broker: Broker) -> dict[str, ResultRecord]:
    """Every record in the results bucket (one watch, not one request per key)."""
    kv = await broker.js.key_value(names.RESULTS_BUCKET)
    watcher = await kv.watchall(ignore_deletes=True)
    records: dict[str, ResultRecord] = {}
    try:
        while True:
            entry = await watcher.updates(timeout=10)
            if entry is None:
                return records
            records[entry.key] = ResultRecord.model_validate_json(entry.value or b"{}")
    finally:
        await watcher.stop()


async def _chaos(run: Run, workers: list[Worker], start: Any, rng: random.Random) -> None:
    """SIGKILL a random worker every ``kill_every`` seconds and start a replacement."""
    faults = run.faults
    while time.monotonic() - run.started < faults.chaos_seconds:
        await asyncio.sleep(rng.uniform(*faults.kill_every))
        victim = rng.choice(workers)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(victim.process.pid, signal.SIGKILL)
        await asyncio.to_thread(victim.process.popen.wait, 10)
        run.kills += 1
        # Not waiting for readiness: during the outage it cannot connect yet.
        workers[workers.index(victim)] = start(wait=False)


async def _outage(run: Run, server: NatsServer, outage_ids: list[str]) -> None:
    """Stop the nats-server, submit a batch meanwhile, start it again."""
    faults = run.faults
    await asyncio.sleep(max(0.0, faults.outage_at - (time.monotonic() - run.started)))
    await asyncio.to_thread(server.stop)
    down = time.monotonic()

    async def submit_during_outage() -> None:
        run.outage_submit_error = await run.submit(outage_ids)

    batch = asyncio.create_task(submit_during_outage())
    await asyncio.sleep(faults.outage)  # the fault itself: the server stays down this long
    await asyncio.to_thread(server.start)
    run.outage_length = time.monotonic() - down
    await batch
    await run.resubmit()


async def _produce(run: Run, ids: list[str]) -> None:
    faults = run.faults
    for i in range(0, len(ids), faults.chunk):
        await run.submit(ids[i : i + faults.chunk])
        await asyncio.sleep(faults.chunk_every)


async def _fault_run(faults: Faults, start_worker: Any, server: NatsServer) -> None:
    queue = f"fq-{uuid.uuid4().hex[:10]}"
    rng = random.Random()
    app = Celeriac("fault-client", nats_url=server.url)
    try:
        broker = await app.broker()
        await _declare(broker, queue, faults.ack_wait)
        tag = uuid.uuid4().hex[:8]
        main = {f"f-{tag}-{i}": i for i in range(faults.tasks - faults.outage_batch)}
        pad = "p" * faults.outage_pad
        outage = {f"o-{tag}-{i}": {"i": i, "pad": pad} for i in range(faults.outage_batch)}
        ids = {**main, **outage}
        run = Run(faults, queue, app, ids)

        def start(wait: bool = True) -> Worker:
            return start_worker(
                queue,
                url=server.url,
                concurrency=faults.concurrency,
                wait=wait,
                extra=("--drain-timeout", "1"),
            )

        workers = [start() for _ in range(faults.workers)]
        run.started = time.monotonic()
        await asyncio.gather(
            _produce(run, list(main)),
            _chaos(run, workers, start, rng),
            _outage(run, server, list(outage)),
        )
        await run.resubmit()  # producer chunks that failed after the outage batch was resent
        chaos_over = time.monotonic()

        async def drained() -> bool:
            info = await broker.js.stream_info(names.stream_name(queue))
            consumer = await broker.js.consumer_info(names.stream_name(queue), names.CONSUMER_NAME)
            state = (info.state.messages, consumer.num_ack_pending, consumer.num_pending)
            assert state == (0, 0, 0), f"(messages, ack-pending, pending) = {state}"
            return True

        await await_until(drained, timeout=faults.bound, what="every task to end", interval=0.5)
        wall = time.monotonic() - run.started
        records = await _all_results(broker)
        dlq = await broker.js.stream_info(names.dead_letter_stream_name(queue))
        # A SUCCESS record's retries: deliveries before the one that succeeded.
        redelivered = sum(1 for t, r in records.items() if t in ids and r.retries > 0)
        print(
            f"\nfault run: {faults.tasks} tasks, {faults.workers} workers x {faults.concurrency}, "
            f"{run.kills} SIGKILLs over {faults.chaos_seconds:g} s, nats-server down "
            f"{run.outage_length:.1f} s, {run.submit_errors} failed submit call(s), "
            f"{len(run.resubmitted)} task(s) resubmitted, {redelivered} "
            f"succeeded on a later delivery, {dlq.state.messages} dead letter(s); all ended "
            f"{wall:.1f} s after the start ({time.monotonic() - chaos_over:.1f} s after "
            f"the last fault)"
        )
        if run.outage_submit_error:
            print(f"first error during the outage: {run.outage_submit_error}")
        missing = [t for t in ids if t not in records]
        wrong = {
            t: (r.state.value, r.result, r.error)
            for t, r in records.items()
            if t in ids and (r.state is not TaskState.SUCCESS or r.result != ids[t])
        }
        assert not missing, f"{len(missing)} task(s) without a record, e.g. {missing[:5]}"
        assert not wrong, f"{len(wrong)} task(s) not SUCCESS with their input, e.g. " + str(
            list(wrong.items())[:5]
        )
        assert dlq.state.messages == 0
        assert run.kills >= 1 and run.outage_length >= faults.outage
        for worker in workers:
            worker.wait_ready(30)
    finally:
        await app.aclose()


async def test_kills_and_an_outage_lose_no_task(start_worker, private_nats: NatsServer) -> None:
    await _fault_run(CI, start_worker, private_nats)


@pytest.mark.slow
async def test_kills_and_an_outage_lose_no_task_full_size(
    start_worker, private_nats: NatsServer
) -> None:
    await _fault_run(FULL, start_worker, private_nats)
