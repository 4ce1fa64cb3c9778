"""Periodic tasks through NATS outages: each slot runs at most once, a missed one is caught up.

A single nats-server SIGKILLed over a slot fires nothing for it when it is back; the
worker notices the slot without a run (``CATCH_UP_GRACE`` after it reconnects) and
asks for it with a catch-up fire, which runs the slot once. On a 3-node cluster the
node leading the work stream (the one firing the schedules) is SIGKILLed, then the
next leader is stopped gracefully. The new leader after the SIGKILL fires once each
schedule that missed slots while no node led, for the latest of them; the graceful
stop hands over without a gap. Each slot runs at most once and is counted once; the
slots lost, and the fires the workers found handled already, are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from celeriac_devenv.nats import NatsCluster, NatsServer
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, KeyValueConfig, StreamConfig
from nats.js.errors import BadRequestError

from celeriac import cron, schedulestore
from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.periodic import CATCH_UP_GRACE, define
from celeriac.protocol import jetstream, names
from celeriac.protocol.periodic import PeriodicTask, ScheduleState, run_id
from celeriac.protocol.states import TaskState
from celeriac.schedulestore import Change
from tests.support import StartWorker, Worker, await_until, read_results
from tests.worker.test_periodic import (
    fire_lines,
    last_slot,
    new_name,
    runs_of,
    state_of,
    wait_idle,
)

pytestmark = pytest.mark.integration

SECOND = timedelta(seconds=1)
REPLICAS = 3


async def _restart(server: NatsServer) -> None:
    """Start a stopped or killed server again (same port, same store) on this thread (a
    server started in a pool thread dies with that thread), and wait until it is healthy."""
    server.launch()
    await asyncio.to_thread(server.wait_healthy, 60.0)


async def _wait_state(
    broker: Broker,
    name: str,
    check: Callable[[ScheduleState], bool],
    what: str,
    *,
    timeout: float,  # noqa: ASYNC109
    worker: Worker,
) -> ScheduleState:
    async def matches() -> ScheduleState | None:
        state = await state_of(broker, name)
        return state if state is not None and check(state) else None

    return await await_until(matches, timeout=timeout, what=what, alive=worker.process)


def _stamp(moment: datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%SZ}"


# A single server SIGKILLed over a slot --------------------------------------------------------


def _cron_soon(interval: int, lead: int = 4) -> dict[str, Any]:
    """A cron firing every ``interval`` seconds (a divisor of 60) whose next slot is about
    ``lead`` seconds away, so a test need not wait most of an interval for it."""
    first = (datetime.now(UTC).second + lead) % interval
    seconds = ",".join(str(s) for s in range(first, 60, interval))
    return {"cron_text": f"{seconds} * * * * *"}


@dataclass(frozen=True)
class Outage:
    """A schedule to kill the server under: how it is timed, and its interval."""

    timing: Callable[[], dict[str, Any]]
    interval: int


# The check comes CATCH_UP_GRACE (10 s) after the reconnect: the interval must leave
# room for it before the next regular slot, or that slot's run makes the check moot.
CRON = Outage(lambda: _cron_soon(20), 20)
# ``every`` has no fixed phase: its slots count from the last run recorded, and the
# restarted server starts the interval afresh (its next fire is 30 s after the start).
EVERY = Outage(lambda: {"every": 30}, 30)


@pytest.mark.parametrize(
    "outage",
    [pytest.param(CRON, id="cron"), pytest.param(EVERY, id="every", marks=pytest.mark.slow)],
)
async def test_a_slot_missed_while_the_server_was_killed_is_caught_up_once(
    outage: Outage, private_nats: NatsServer, start_worker: StartWorker, queue: str
) -> None:
    interval = outage.interval * SECOND
    broker = await Broker.connect(private_nats.url, declare=True, result_ttl=600)
    periodic: PeriodicTask | None = None
    try:
        await broker.ensure_queue(queue)
        worker = start_worker(queue, url=private_nats.url)
        periodic = define(
            name=new_name(), task="w.add", args=[1, 2], queue=queue, expires=60, **outage.timing()
        )
        assert await schedulestore.store(broker.js, periodic) is Change.CREATED
        state = await _wait_state(
            broker, periodic.name, lambda s: s.runs >= 1, "the first run",
            timeout=outage.interval + 30, worker=worker,
        )  # fmt: skip
        first = last_slot(state)
        await wait_idle(broker, queue, worker)  # its run done, nothing in flight
        missed = first + interval
        assert datetime.now(UTC) < missed - 3 * SECOND, "too late in the interval to kill"

        private_nats.kill()
        await await_until(
            lambda: datetime.now(UTC) > missed + 0.5 * SECOND,
            timeout=outage.interval + 10,
            what="the slot to go by while the server is down",
        )
        await _restart(private_nats)
        restarted = datetime.now(UTC)

        asked = f"schedule {periodic.name}: slot {_stamp(missed)} went by without a run; asked"
        await await_until(
            lambda: asked in worker.log(),
            timeout=CATCH_UP_GRACE.total_seconds() + 30,
            what="the worker to ask for the missed slot's run",
            alive=worker.process,
        )
        state = await _wait_state(
            broker, periodic.name, lambda s: last_slot(s) >= missed, "the missed slot's run",
            timeout=30, worker=worker,
        )  # fmt: skip
        await schedulestore.delete_schedule(broker.js, queue, periodic.name)
        await wait_idle(broker, queue, worker)

        state = await _wait_state(
            broker, periodic.name, lambda s: True, "the state", timeout=10, worker=worker
        )
        runs = await runs_of(broker, periodic.name)
        print(
            f"\n{periodic.cron or f'every {periodic.every}s'}: first run {_stamp(first)}, "
            f"killed until {restarted:%H:%M:%S.%f}, slot {_stamp(missed)} caught up; "
            f"runs {[_stamp(slot) for slot in runs]}, state runs {state.runs}"
        )
        assert list(runs)[:2] == [first, missed]
        assert all(slot >= missed + interval for slot in list(runs)[2:])  # regular ones
        assert state.runs == len(runs)
        assert all(record.state is TaskState.SUCCESS for record in runs.values())
        assert runs[missed].result == 3

        run = run_id(periodic.name, missed)
        log = worker.log()
        assert log.count(asked) == 1
        # One fire of the missed slot (the catch-up: the server fired nothing for it),
        # one run enqueued and executed once.
        fires = [line for line in fire_lines(worker, periodic.name) if f"[task {run}]" in line]
        assert len(fires) == 1 and f" -> task {run}" in fires[0], fires
        executed = [
            line for line in log.splitlines() if f"[task {run}]" in line and "running w.add" in line
        ]
        assert len(executed) == 1, executed
    finally:
        if periodic is not None:
            with contextlib.suppress(Exception):
                await schedulestore.delete_schedule(broker.js, queue, periodic.name)
        await broker.close()


# A 3-node cluster: the stream leader killed, then the next one stopped gracefully ------------


async def _declare(js: JetStreamContext, queue: str) -> None:
    """The queue and the shared buckets with 3 replicas, built as the SDK builds them (with
    one replica a bucket, the schedules' state among them, is gone while its node is)."""
    for config in jetstream.shared_bucket_configs(REPLICAS):
        try:
            await js.create_key_value(KeyValueConfig(**config))
        except BadRequestError:  # an earlier test (or the SDK) made it: scale it up
            stream = (await js.stream_info(f"KV_{config['bucket']}")).config
            if (stream.num_replicas or 1) < REPLICAS:
                stream.num_replicas = REPLICAS
                await js.update_stream(stream)
    settings = jetstream.QueueSettings(replicas=REPLICAS)
    await js.add_stream(StreamConfig(**jetstream.work_stream_config(queue, settings)))
    await js.add_stream(StreamConfig(**jetstream.dead_letter_stream_config(queue, settings)))
    await js.add_consumer(
        names.stream_name(queue), ConsumerConfig(**jetstream.consumer_config(queue, settings))
    )


async def _stream_leader(js: JetStreamContext, queue: str) -> str:
    cluster = (await js.stream_info(names.stream_name(queue))).cluster
    assert cluster is not None and cluster.leader, "no stream leader yet"
    return str(cluster.leader)


@dataclass
class Disruption:
    """A stream leader taken down: how, which, when, and when the schedule ran again."""

    how: str  # "SIGKILL" or "graceful stop"
    node: str
    at: datetime
    elected: float = 0.0  # seconds until another node led the stream
    back: datetime | None = None  # when the node was healthy again
    resumed: datetime | None = None  # the first slot run after it was back


async def _ran_after(broker: Broker, name: str, moment: datetime) -> ScheduleState | None:
    state = await state_of(broker, name)
    return state if state is not None and last_slot(state) > moment else None


async def _take_down(
    cluster: NatsCluster, how: str, *, js: JetStreamContext, queue: str, broker: Broker, name: str
) -> Disruption:
    """Take the stream leader down (SIGKILL or SIGTERM), start it again once another
    node leads, and wait until schedule ``name`` has run a slot after that."""
    leader = await await_until(
        lambda: _stream_leader(js, queue), timeout=60, what="the stream leader"
    )
    node = cluster.node(leader)
    disruption = Disruption(how, leader, datetime.now(UTC))
    started = time.monotonic()
    await asyncio.to_thread(node.kill if how == "SIGKILL" else node.stop)

    async def another_leads() -> bool:
        return await _stream_leader(js, queue) != leader

    await await_until(another_leads, timeout=60, what="a new stream leader", interval=0.1)
    disruption.elected = time.monotonic() - started
    await _restart(node)
    disruption.back = back = datetime.now(UTC)
    state = await await_until(
        lambda: _ran_after(broker, name, back), timeout=60, what=f"a run after the {how}"
    )
    disruption.resumed = last_slot(state)
    return disruption


_COUNTED = re.compile(r"\[task (\S+)\] .* slot (\S+) -> task (\S+)")
_AGAIN = re.compile(r"\[task (\S+)\] .* slot (\S+): handled already")
_FAILED = re.compile(r"\[task (\S+)\] .* slot \S+ not handled ")
_FIRE = re.compile(r"\[task (\S+)\] .*celeriac\.worker_runtime\.firing: ")
_RAN = re.compile(r"\[task (\S+)\] .* running w\.add \(attempt (\d+)\)")


def _slot_of(run: str) -> datetime:
    return datetime.strptime(run.rsplit(".", 1)[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def _times(moments: Iterable[datetime]) -> list[str]:
    return [f"{moment:%H:%M:%S}" for moment in moments]


@dataclass
class Tally:
    """What the workers did with one schedule's fires, from their logs and the results."""

    periodic: PeriodicTask
    interval: timedelta
    records: dict[str, Any]  # run id -> its result record
    enqueued: Counter[str]  # run id -> fires that enqueued it
    first_runs: Counter[str]  # run id -> executions as a first attempt
    redelivered: Counter[str]  # run id -> executions as a later attempt
    # Fires found handled already: a second fire of a slot that ran (a duplicate); a
    # fire back after its own failure, its slot counted (its state write was applied
    # though it timed out); or back after a failure and after a later slot ran, its
    # slot never run (late).
    duplicates: list[str]
    retried: list[str]
    late: list[str]
    lost: list[datetime]  # slots between the first and the last run without a run
    failed: list[str]  # fires not handled (NATS failed), NAKed to come back
    fires: dict[str, list[str]]  # run id -> the lines about its slot's fires

    @property
    def executed_twice(self) -> list[str]:
        """Runs executed more than once (a redelivery after an ack lost with a leader)."""
        return [run for run, count in (self.first_runs + self.redelivered).items() if count > 1]

    def within(self, moments: list[datetime], d: Disruption) -> list[datetime]:
        assert d.resumed is not None
        return [m for m in moments if d.at - self.interval <= m <= d.resumed]

    def report(self, disruptions: list[Disruption]) -> str:
        slots = sorted(_slot_of(run) for run in self.records)
        lines = [
            f"schedule {self.periodic.cron!r}: {len(self.records)} runs of slots "
            f"{_stamp(slots[0])}..{_stamp(slots[-1])}; {len(self.duplicates)} duplicate "
            f"fire(s) handled already, {len(self.lost)} slot(s) lost ({len(self.late)} by a "
            f"late fire taken for a duplicate: {_times(map(_slot_of, self.late))}), "
            f"{len(self.retried)} fire(s) back after a failure found their slot counted, "
            f"{sum(self.redelivered.values())} execution(s) on a redelivery, "
            f"{len(self.executed_twice)} run(s) executed twice {sorted(self.executed_twice)}, "
            f"{len(self.failed)} fire(s) not handled at first {_times(map(_slot_of, self.failed))}"
        ]
        for d in disruptions:
            lost = self.within(self.lost, d)
            dupes = self.within([_slot_of(run) for run in self.duplicates], d)
            lines.append(
                f"    {d.how}: {len(lost)} slot(s) lost {_times(lost)}, "
                f"{len(dupes)} duplicate fire(s) {_times(dupes)}"
            )
        return "\n".join(lines)


async def _tally(
    broker: Broker, periodic: PeriodicTask, interval: timedelta, workers: list[Worker]
) -> Tally:
    lines = [line for worker in workers for line in worker.log().splitlines()]
    mine = f"[task {periodic.name}."
    counted = [m for m in map(_COUNTED.search, lines) if m and m[0].startswith(mine)]
    again = [m[1] for m in map(_AGAIN.search, lines) if m and m[0].startswith(mine)]
    ran = [m for m in map(_RAN.search, lines) if m and m[0].startswith(mine)]
    failed = [m[1] for m in map(_FAILED.search, lines) if m and m[0].startswith(mine)]
    fires: dict[str, list[str]] = {}
    for line in lines:
        found = _FIRE.search(line)
        if found and found[0].startswith(mine):
            fires.setdefault(found[1], []).append(line)
    logged = sorted(_slot_of(m[3]) for m in counted)
    assert logged, f"no run of {periodic.name} enqueued"
    # Read by id: on a cluster a fresh watch of the bucket may report its initial values
    # before it has delivered them.
    steps = int((logged[-1] - logged[0]) / interval)
    slots = [logged[0] + k * interval for k in range(-2, steps + 3)]
    records = await read_results(broker.js, [run_id(periodic.name, slot) for slot in slots])
    done = sorted(_slot_of(run) for run in records)
    return Tally(
        periodic=periodic,
        interval=interval,
        records=records,
        enqueued=Counter(m[3] for m in counted),
        first_runs=Counter(m[1] for m in ran if m[2] == "1"),
        redelivered=Counter(m[1] for m in ran if m[2] != "1"),
        duplicates=[run for run in again if run in records and run not in failed],
        retried=[run for run in again if run in records and run in failed],
        late=[run for run in again if run not in records],
        failed=failed,
        fires=fires,
        lost=[
            s for s in slots if done[0] < s < done[-1] and run_id(periodic.name, s) not in records
        ],
    )


def _check(tally: Tally, state: ScheduleState) -> None:
    """Each run id executed from one message, and counted once in the state."""
    records, enqueued = tally.records, tally.enqueued
    results = {run: (r.state, r.result) for run, r in records.items()}
    assert all(value == (TaskState.SUCCESS, 3) for value in results.values()), results
    # No fire enqueued a run twice, nor a run that is not there. (A run may lack its
    # " -> task" line: a fire whose state write timed out, though applied, comes back
    # and finds its slot handled.)
    assert all(count == 1 for count in enqueued.values()), enqueued.most_common(3)
    assert set(enqueued) <= set(records), sorted(set(enqueued) - set(records))
    # Every run executed, each from one message: a second message of a run id would run
    # as a first attempt again. A redelivery of the one message is a later attempt (after
    # an ack lost with a leader, or a delivery to a pull request given up on).
    assert set(tally.first_runs + tally.redelivered) == set(records)
    assert all(count == 1 for count in tally.first_runs.values()), tally.first_runs
    # The state counts each run once.
    uncounted = {run: tally.fires.get(run, []) for run in sorted(set(records) - set(enqueued))}
    assert state.runs == len(records), (state, len(records), uncounted)
    last = max(_slot_of(run) for run in records)
    assert (state.last_slot, state.last_run) == (last, run_id(tally.periodic.name, last))


async def test_leader_changes_run_each_slot_at_most_once(
    start_worker: StartWorker, nats_cluster: NatsCluster, queue: str
) -> None:
    """A schedule firing every second and one every 20 s, while the stream leader is
    SIGKILLed (then started again) and the next one stopped gracefully (and started).

    The SIGKILL costs the every-second schedule the slots until another node leads,
    but for one: the new leader fires each schedule that missed a slot once, for the
    latest one. The 20 s schedule's first slot falls in that gap: it runs once, late.
    A graceful stop hands over without a gap. A fire of a slot handled already (a
    redelivery, or a fire back after a failure) must enqueue nothing.
    """
    await asyncio.to_thread(nats_cluster.wait_ready)  # settled after an earlier test's kills
    app = Celeriac("schedule-cluster-client", nats_url=nats_cluster.urls)
    watched: list[tuple[PeriodicTask, timedelta]] = []
    try:
        broker = await app.broker()
        await _declare(broker.js, queue)
        js = broker.nc.jetstream(timeout=2.0)  # short: a leader that is gone fails fast
        workers = [start_worker(queue, url=nats_cluster.urls) for _ in range(2)]
        # Runs may start up to a minute late: none expires while leaders move.
        every_second = define(
            name=new_name(), task="w.add", args=[1, 2], queue=queue,
            cron_text="*/1 * * * * *", expires=60,
        )  # fmt: skip
        watched = [(every_second, SECOND)]
        await schedulestore.store(broker.js, every_second)
        stored = datetime.now(UTC)
        await await_until(
            lambda: _ran_after(broker, every_second.name, stored + 2 * SECOND),
            timeout=30,
            what="three runs a second",
        )
        # Its first slot a few seconds away: after the kill, before another node leads.
        slow = define(
            name=new_name(), task="w.add", args=[1, 2], queue=queue, expires=60,
            **_cron_soon(20, lead=4),
        )  # fmt: skip
        watched.append((slow, 20 * SECOND))
        await schedulestore.store(broker.js, slow)
        assert slow.cron is not None
        gap_slot = cron.next_fire(slow.cron, None, "UTC", datetime.now(UTC))
        assert datetime.now(UTC) < gap_slot - SECOND, "too late to kill before the 20 s slot"
        disruptions = [
            await _take_down(
                nats_cluster, how, js=js, queue=queue, broker=broker, name=every_second.name
            )
            for how in ("SIGKILL", "graceful stop")
        ]
        await await_until(
            lambda: state_of(broker, slow.name), timeout=30, what="the 20 s schedule's run"
        )
        for periodic, _ in watched:
            await schedulestore.delete_schedule(broker.js, queue, periodic.name)
        for worker in workers:
            await wait_idle(broker, queue, worker)

        tallies = [await _tally(broker, p, interval, workers) for p, interval in watched]
        log = "\n".join(worker.log() for worker in workers)
        [enqueued_at] = [
            line[:23]
            for line in log.splitlines()
            if f" -> task {run_id(slow.name, gap_slot)}" in line
        ] or ["?"]
        report = [
            f"\n{REPLICAS} nodes, {len(workers)} workers; "
            f"{log.count('went by without a run')} catch-up(s) asked for"
        ]
        for d in disruptions:
            assert d.back is not None
            report.append(
                f"  {d.how} of stream leader {d.node} at {d.at:%H:%M:%S.%f}: another node "
                f"led after {d.elected:.1f} s, node back at {d.back:%H:%M:%S}, the first "
                f"run after it {_stamp(d.resumed or d.at)}"
            )
        report += [f"  {tally.report(disruptions)}" for tally in tallies]
        report.append(f"  the 20 s schedule's slot {_stamp(gap_slot)} enqueued at {enqueued_at}")
        print("\n".join(report))

        for (periodic, _), tally in zip(watched, tallies, strict=True):
            state = await await_until(
                partial(state_of, broker, periodic.name), timeout=30, what="the state"
            )
            _check(tally, state)
        # The slot that fell while no node led ran, once.
        assert run_id(slow.name, gap_slot) in tallies[1].records
        assert tallies[1].lost == []
        for worker in workers:
            assert worker.process.alive(), worker.log()
    finally:
        for node in nats_cluster.nodes:  # the session's cluster stays whole for the next test
            if not node.running:
                await _restart(node)
        with contextlib.suppress(Exception):
            broker = await app.broker()
            for periodic, _ in watched:
                with contextlib.suppress(Exception):
                    await schedulestore.delete_schedule(broker.js, queue, periodic.name)
            await broker.js.delete_stream(names.stream_name(queue))
            await broker.js.delete_stream(names.dead_letter_stream_name(queue))
        await app.aclose()
