"""JetStream clustering: a 3-node cluster loses no task when the leaders of a queue die.

The queue is declared with 3 replicas (work stream, dead-letter stream, consumer), as
are the shared KV buckets. The SDK and the workers get the cluster's seed list. While
tasks are submitted and run, the node leading the work stream is SIGKILLed and, once
another node leads it, started again; then the same for the node leading the queue's
consumer (the full-size run goes round twice). Every task must end SUCCESS with its
result. Runs beyond one per task (an ack lost with its leader makes a task run again)
are counted from the workers' metrics and printed, with the time from each kill until
tasks complete again.

The producer submits through the kills, sending again (same ids) what the SDK could
not confirm, and it waits at fixed points until the next kill has happened, so every
kill falls while tasks flow, however fast the machine. The CI-sized case runs by
default; the full-size one is ``slow`` (``--run-slow``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field

import pytest
from celeriac_devenv.nats import NatsCluster, NatsServer
from celeriac_devenv.processes import free_port
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, KeyValueConfig, StreamConfig
from nats.js.errors import BadRequestError
from prometheus_client.parser import text_string_to_metric_families

from celeriac.app import Celeriac
from celeriac.exceptions import CeleriacError
from celeriac.operator.connections import NatsConnections
from celeriac.protocol import jetstream, names
from celeriac.protocol.states import TaskState
from tests.support import StartWorker, Worker, await_until, read_results

pytestmark = pytest.mark.integration

REPLICAS = 3
TASK = "w.aadd"  # sleeps 10 ms, returns a + b


@dataclass(frozen=True)
class Chaos:
    """The size of a run and how many leaders die during it."""

    tasks: int
    chunk: int  # the producer submits this many at a time...
    chunk_every: float  # ...this often (seconds)
    kills: int  # leaders SIGKILLed in turn: the work stream's, the consumer's, ...
    bound: float  # seconds the whole run may take
    workers: int = 3
    concurrency: int = 4
    ack_wait: float = 5.0  # an ack lost with a leader: redelivered after this long

    def trigger(self, kill: int) -> int:
        """Kill number ``kill`` waits until this many tasks have been submitted."""
        return int(self.tasks * (0.15 + 0.7 * kill / self.kills))

    def gate(self, kill: int) -> int:
        """The producer goes past this many tasks only once kill number ``kill`` happened."""
        return self.trigger(kill) + int(self.tasks * 0.6 / self.kills)


CI = Chaos(tasks=3000, chunk=100, chunk_every=0.2, kills=2, bound=100)
FULL = Chaos(tasks=20_000, chunk=250, chunk_every=0.2, kills=4, bound=420, concurrency=8)


@dataclass
class Kill:
    """One leader SIGKILLed: which, when, and how long the cluster took to get over it."""

    what: str  # "stream" or "consumer"
    node: str
    at: float  # time.monotonic() of the kill
    completed: int  # tasks completed just before it
    elected: float = 0.0  # seconds until another node led
    back: float = 0.0  # seconds until the restarted node was healthy and current
    recovered: float = 0.0  # seconds until tasks completed again (see Progress.since)


@dataclass
class Progress:
    """Completed tasks over time, sampled from the work stream while the run goes on.

    The stream keeps a message until its task is acked (work-queue retention), so
    ``last_seq - messages`` counts the tasks that completed.
    """

    js: JetStreamContext  # with a short timeout: a sample must not hide a stall
    stream: str
    samples: list[tuple[float, int]] = field(default_factory=list)

    async def completed(self) -> int:
        info = await self.js.stream_info(self.stream)
        return int(info.state.last_seq - info.state.messages)

    async def follow(self, stop: asyncio.Event) -> None:
        """Sample until ``stop`` is set; a sample that fails (no leader yet) is skipped."""
        while not stop.is_set():
            with contextlib.suppress(Exception):
                done = await self.completed()
                self.samples.append((time.monotonic(), done))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.1)

    def since(self, kill: Kill, capacity: int) -> float | None:
        """Seconds from ``kill`` until more than ``capacity`` tasks completed after it.

        No more than ``capacity`` tasks (every worker slot) can be in flight at the
        kill, so past that, tasks delivered after the kill are completing.
        """
        for at, done in self.samples:
            if at > kill.at and done > kill.completed + capacity:
                return at - kill.at
        return None


@dataclass
class Run:
    """A chaos run: its tasks, what was submitted, and the kills."""

    chaos: Chaos
    cluster: NatsCluster
    app: Celeriac
    queue: str
    ids: dict[str, int]  # task id -> its first argument (the result is that + 1)
    progress: Progress
    killed: list[asyncio.Event]
    kills: list[Kill] = field(default_factory=list)
    submitted: int = 0  # tasks confirmed as enqueued
    unconfirmed: set[str] = field(default_factory=set)
    resubmitted: set[str] = field(default_factory=set)
    submit_errors: int = 0
    first_error: str = ""
    started: float = field(default_factory=time.monotonic)

    @property
    def capacity(self) -> int:
        return self.chaos.workers * self.chaos.concurrency

    @property
    def stream(self) -> str:
        return names.stream_name(self.queue)

    async def submit(self, chunk: list[str]) -> None:
        """Submit ``chunk``; keep the ids a failed submit names, to submit them again."""
        signatures = [
            self.app.signature(TASK, [self.ids[t], 1], queue=self.queue, task_id=t) for t in chunk
        ]
        try:
            await self.app.asend_many(signatures)
        except CeleriacError as exc:
            self.submit_errors += 1
            self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"[:300]
            named = getattr(exc, "task_ids", None)
            self.unconfirmed |= set(named) if named is not None else set(chunk)

    async def resubmit(self) -> bool:
        """Submit the unconfirmed ids again (same ids: the stream drops repeats)."""
        pending, self.unconfirmed = sorted(self.unconfirmed), set()
        for i in range(0, len(pending), self.chaos.chunk):
            part = pending[i : i + self.chaos.chunk]
            self.resubmitted |= set(part)
            await self.submit(part)
        return not self.unconfirmed


async def _declare_buckets(js: JetStreamContext) -> None:
    """The shared buckets with 3 replicas (as the SDK declares them, with one replica,
    a bucket is out of reach while its node is down)."""
    for config in jetstream.shared_bucket_configs():
        try:
            await js.create_key_value(KeyValueConfig(**{**config, "replicas": REPLICAS}))
        except BadRequestError:  # an earlier test (or the SDK) made it: scale it up
            stream = (await js.stream_info(f"KV_{config['bucket']}")).config
            if (stream.num_replicas or 1) < REPLICAS:
                stream.num_replicas = REPLICAS
                await js.update_stream(stream)


async def _declare(js: JetStreamContext, queue: str, chaos: Chaos) -> None:
    """The queue with 3 replicas, built as the SDK's declarer builds it."""
    await _declare_buckets(js)
    settings = jetstream.QueueSettings(replicas=REPLICAS, ack_wait_seconds=chaos.ack_wait)
    await js.add_stream(StreamConfig(**jetstream.work_stream_config(queue, settings)))
    await js.add_stream(StreamConfig(**jetstream.dead_letter_stream_config(queue, settings)))
    await js.add_consumer(
        names.stream_name(queue), ConsumerConfig(**jetstream.consumer_config(queue, settings))
    )


async def _leader(js: JetStreamContext, stream: str, what: str) -> str:
    """The server name of the node leading the work stream or its consumer."""
    if what == "stream":
        cluster = (await js.stream_info(stream)).cluster
    else:
        cluster = (await js.consumer_info(stream, names.CONSUMER_NAME)).cluster
    assert cluster is not None and cluster.leader, f"no {what} leader yet"
    return str(cluster.leader)


async def _restart(node: NatsServer) -> None:
    """Start a killed node again, on this thread (a server started in a pool thread
    dies when the pool ends that thread), and wait until it is healthy and current."""
    node.launch()
    await asyncio.to_thread(node.wait_healthy, 60.0)


async def _kill_leader(run: Run, number: int, js: JetStreamContext) -> None:
    """SIGKILL the node leading the stream (even numbers) or the consumer (odd ones),
    start it again once another node leads, and wait until tasks complete again."""
    what = ("stream", "consumer")[number % 2]
    name = await await_until(
        lambda: _leader(js, run.stream, what), timeout=30, what=f"the {what} leader"
    )
    node = run.cluster.node(name)

    async def completed() -> list[int]:  # a list: zero tasks done is an answer too
        return [await run.progress.completed()]

    [before] = await await_until(completed, timeout=30, what="the tasks completed so far")
    kill = Kill(what, name, time.monotonic(), before)
    await asyncio.to_thread(node.kill)
    run.kills.append(kill)
    run.killed[number].set()

    async def another_leads() -> bool:
        return await _leader(js, run.stream, what) != name

    # The deliberate gap: the node stays down until the cluster has moved on without it.
    await await_until(another_leads, timeout=60, what=f"a new {what} leader", interval=0.1)
    kill.elected = time.monotonic() - kill.at
    await _restart(node)
    kill.back = time.monotonic() - kill.at - kill.elected
    kill.recovered = await await_until(
        lambda: run.progress.since(kill, run.capacity),
        timeout=60,
        what=f"tasks to complete again after the {what} leader {name} died",
        interval=0.1,
    )


async def _chaos(run: Run, js: JetStreamContext) -> None:
    for number in range(run.chaos.kills):
        await _submitted(run, run.chaos.trigger(number))
        await _kill_leader(run, number, js)


async def _submitted(run: Run, count: int) -> None:
    await await_until(
        lambda: run.submitted >= count,
        timeout=run.chaos.bound,
        what=f"{count} tasks submitted",
        interval=0.05,
    )


async def _produce(run: Run) -> None:
    """Submit chunk after chunk as an application would: a chunk the SDK could not
    confirm is submitted again (same ids) until it is, before the next one."""
    order = list(run.ids)
    chaos = run.chaos
    for start in range(0, len(order), chaos.chunk):
        for number in range(chaos.kills):
            if chaos.gate(number) <= start:
                await run.killed[number].wait()  # an event, set by the kill itself
        chunk = order[start : start + chaos.chunk]
        await run.submit(chunk)
        if run.unconfirmed:
            await await_until(
                run.resubmit,
                timeout=chaos.bound,
                what=f"tasks {start}..{start + len(chunk) - 1} confirmed",
                interval=chaos.chunk_every,
            )
        run.submitted = start + len(chunk)
        await asyncio.sleep(chaos.chunk_every)  # the pace of the load, not a wait


def _runs(workers: list[Worker], queue: str) -> int:
    """How many times the workers ran a task function of ``queue`` (their metrics)."""
    total = 0
    for worker in workers:
        status, text = worker.get("/metrics")
        assert status == 200, text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (
                    sample.name == "celeriac_worker_task_duration_seconds_count"
                    and sample.labels.get("queue") == queue
                ):
                    total += int(sample.value)
    return total


async def _drained(js: JetStreamContext, stream: str) -> bool:
    info = await js.stream_info(stream)
    consumer = await js.consumer_info(stream, names.CONSUMER_NAME)
    state = (info.state.messages, consumer.num_ack_pending, consumer.num_pending)
    assert state == (0, 0, 0), f"(messages, ack-pending, pending) = {state}"
    return True


@dataclass(frozen=True)
class Tally:
    """How a run ended."""

    lost: int  # tasks without a SUCCESS result carrying their value
    runs: int  # task function runs, counted by the workers
    redelivered: int  # SUCCESS on a later delivery than the first
    dead: int  # dead letters
    wall: float  # seconds from the first submit until every task ended


def _report(run: Run, tally: Tally) -> str:
    chaos = run.chaos
    lines = [
        f"\ncluster run: {chaos.tasks} tasks ({TASK}), {chaos.workers} workers x "
        f"{chaos.concurrency}, {len(run.cluster.nodes)} nodes, queue and buckets R{REPLICAS}; "
        f"{len(run.kills)} leader SIGKILLs:"
    ]
    for kill in run.kills:
        lines.append(
            f"  {kill.what} leader {kill.node} killed at {kill.at - run.started:.1f} s "
            f"({kill.completed} done): another node led after {kill.elected:.1f} s, "
            f"the node was back {kill.back:.1f} s later, tasks completed again "
            f"{kill.recovered:.1f} s after the kill"
        )
    lines.append(
        f"  lost {tally.lost}, {tally.runs - chaos.tasks} duplicate run(s) ({tally.runs} runs "
        f"for {chaos.tasks} tasks), {tally.redelivered} succeeded on a later delivery, "
        f"{run.submit_errors} failed submit call(s), {len(run.resubmitted)} task(s) "
        f"resubmitted, {tally.dead} dead letter(s); all ended {tally.wall:.1f} s after the start"
    )
    if run.first_error:
        lines.append(f"  first failed submit: {run.first_error}")
    return "\n".join(lines)


async def _run_through_kills(run: Run, js: JetStreamContext) -> float:
    """Submit every task while leaders die; wait until every task ended; the wall time."""
    stop = asyncio.Event()
    follower = asyncio.create_task(run.progress.follow(stop))
    run.started = time.monotonic()
    try:
        async with asyncio.timeout(run.chaos.bound):
            async with asyncio.TaskGroup() as group:
                group.create_task(_produce(run))
                group.create_task(_chaos(run, js))
            await await_until(
                lambda: _drained(js, run.stream),
                timeout=run.chaos.bound,
                what="every task to end",
                interval=0.2,
            )
    finally:
        stop.set()
        await follower
    return time.monotonic() - run.started


async def _check(run: Run, js: JetStreamContext, workers: list[Worker], wall: float) -> None:
    """Every task SUCCESS with its value, nothing dead-lettered; print the figures."""
    chaos, ids = run.chaos, run.ids
    records = await read_results(js, list(ids))
    dead = (await js.stream_info(names.dead_letter_stream_name(run.queue))).state.messages
    runs = _runs(workers, run.queue)
    missing = [t for t in ids if t not in records]
    wrong = {
        t: (r.state.value, r.result, r.error)
        for t, r in records.items()
        if r.state is not TaskState.SUCCESS or r.result != ids[t] + 1
    }
    redelivered = sum(1 for r in records.values() if r.retries > 0)
    print(_report(run, Tally(len(missing) + len(wrong), runs, redelivered, dead, wall)))
    assert not missing, f"{len(missing)} task(s) without a result, e.g. {missing[:5]}"
    assert not wrong, f"{len(wrong)} task(s) not SUCCESS with their value, e.g. " + str(
        list(wrong.items())[:5]
    )
    assert dead == 0
    assert runs >= chaos.tasks, f"{runs} runs for {chaos.tasks} tasks"
    assert len(run.kills) == chaos.kills
    for task_id in list(ids)[:: max(1, chaos.tasks // 20)]:  # through the public API too
        assert await run.app.AsyncResult(task_id).aget(timeout=10) == ids[task_id] + 1
    for worker in workers:
        assert worker.process.alive(), worker.log()


async def _cluster_run(chaos: Chaos, start_worker: StartWorker, cluster: NatsCluster) -> None:
    queue = f"cq-{uuid.uuid4().hex[:10]}"
    await asyncio.to_thread(cluster.wait_ready)  # settled after an earlier test's kills
    app = Celeriac("cluster-client", nats_url=cluster.urls)
    try:
        broker = await app.broker()
        await _declare(broker.js, queue, chaos)
        js = broker.nc.jetstream(timeout=1.0)  # short: a leader that is gone fails fast
        tag = uuid.uuid4().hex[:8]
        ids = {f"c-{tag}-{i}": i for i in range(chaos.tasks)}
        killed = [asyncio.Event() for _ in range(chaos.kills)]
        run = Run(chaos, cluster, app, queue, ids, Progress(js, names.stream_name(queue)), killed)
        workers = [
            start_worker(queue, url=cluster.urls, concurrency=chaos.concurrency)
            for _ in range(chaos.workers)
        ]
        wall = await _run_through_kills(run, js)
        await _check(run, broker.js, workers, wall)
    finally:
        for node in cluster.nodes:  # the session's cluster stays whole for the next test
            if not node.running:
                await _restart(node)
        with contextlib.suppress(Exception):
            broker = await app.broker()
            await broker.js.delete_stream(names.stream_name(queue))
            await broker.js.delete_stream(names.dead_letter_stream_name(queue))
        await app.aclose()


async def test_every_client_takes_a_seed_list(
    start_worker: StartWorker, nats_cluster: NatsCluster, queue: str
) -> None:
    """SDK, worker and operator split a comma-separated URL into servers, and connect
    even though one of the seeds answers nothing."""
    dead = f"nats://127.0.0.1:{free_port()}"
    seeds = f" {dead}, {nats_cluster.urls} ,"
    app = Celeriac("seed-client", nats_url=seeds)
    connections = NatsConnections(seeds)
    try:
        await _declare_buckets((await app.broker()).js)  # before anyone makes them R1
        worker = start_worker(queue, url=seeds)
        result = await app.asend_task("w.add", [2, 3], queue=queue)
        assert await result.aget(timeout=30) == 5, worker.log()
        broker = await app.broker()
        assert {u.port for u in broker.nc.servers} >= {n.port for n in nats_cluster.nodes}
        js = await connections.jetstream()
        info = await js.stream_info(names.stream_name(queue))
        assert info.config.name == names.stream_name(queue)
    finally:
        await connections.close()
        await app.aclose()


async def test_leader_kills_lose_no_task(
    start_worker: StartWorker, nats_cluster: NatsCluster
) -> None:
    await _cluster_run(CI, start_worker, nats_cluster)


@pytest.mark.slow
async def test_leader_kills_lose_no_task_full_size(
    start_worker: StartWorker, nats_cluster: NatsCluster
) -> None:
    await _cluster_run(FULL, start_worker, nats_cluster)
