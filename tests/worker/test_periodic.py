"""Periodic tasks end to end: schedules fired by the real nats-server, real workers.

Each test publishes a schedule message the way the SDK does (plain nats-py, on the
schedule's own subject, with ``Nats-Schedule`` and ``Celeriac-Periodic``), lets the
server fire it, and purges the schedule's subject at the end so it stops firing.
Slots are whole seconds, so one run per second is expected.
"""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from celeriac_devenv.nats import NatsServer
from nats.js.errors import KeyNotFoundError

from celeriac import cron, schedulestore
from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.periodic import catch_up_message, define, latest_slot
from celeriac.protocol import jetstream, names
from celeriac.protocol.envelope import DeadLetterReason, ResultRecord
from celeriac.protocol.periodic import (
    HDR_CATCH_UP,
    HDR_PERIODIC,
    HDR_SCHEDULE_NEXT,
    HDR_SCHEDULER,
    ConcurrencyPolicy,
    PeriodicTask,
    ScheduleState,
    run_id,
)
from celeriac.protocol.states import TaskState
from celeriac.worker_runtime.firing import Fire, Fires, decode_fire
from tests.support import StartWorker, Worker, await_until, wait_dead_letters

pytestmark = pytest.mark.integration

SECOND = timedelta(seconds=1)


# Helpers -----------------------------------------------------------------------------------


def new_name() -> str:
    return f"p-{uuid.uuid4().hex[:10]}"


def rfc3339(moment: datetime) -> str:
    """As the server writes ``Nats-Schedule-Next`` for a whole second in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Schedules:
    """Publishes schedules as the SDK does; purges every one of them at the end."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.published: list[PeriodicTask] = []

    async def publish(
        self, periodic: PeriodicTask, pattern: str, body: PeriodicTask | None = None
    ) -> None:
        """Hold ``periodic`` on its subject, firing ``body`` (itself unless given)."""
        fired = body or periodic
        await self.broker.ensure_queue(periodic.queue)
        headers = {
            names.HDR_SCHEDULE: pattern,
            names.HDR_SCHEDULE_TARGET: names.task_subject(periodic.queue),
            HDR_PERIODIC: fired.name,
        }
        self.published.append(periodic)
        await self.broker.js.publish(periodic.subject, fired.dumps(), headers=headers)

    async def stop(self, periodic: PeriodicTask) -> None:
        """Delete the schedule: purge its subject, so it fires no more."""
        stream = names.stream_name(periodic.queue)
        await self.broker.js.purge_stream(stream, subject=periodic.subject)


@pytest.fixture
async def schedules(broker: Broker) -> AsyncIterator[Schedules]:
    made = Schedules(broker)
    yield made
    for periodic in made.published:
        await made.stop(periodic)


async def hand_fire(broker: Broker, periodic: PeriodicTask, next_fire: datetime) -> int:
    """Publish what the server publishes when it fires ``periodic`` (next slot
    ``next_fire``) on the task subject; the stream sequence it got."""
    headers = {
        HDR_PERIODIC: periodic.name,
        HDR_SCHEDULER: periodic.subject,
        HDR_SCHEDULE_NEXT: rfc3339(next_fire),
    }
    ack = await broker.js.publish(
        names.task_subject(periodic.queue), periodic.dumps(), headers=headers
    )
    return ack.seq


async def state_of(broker: Broker, name: str) -> ScheduleState | None:
    kv = await broker.declarer.bucket(names.SCHEDULES_BUCKET, ttl=jetstream.SCHEDULES_TTL_SECONDS)
    try:
        entry = await kv.get(name)
    except Exception:
        return None
    return ScheduleState.model_validate_json(entry.value or b"")


async def wait_state(
    broker: Broker, name: str, check: Callable[[ScheduleState], bool], what: str
) -> ScheduleState:
    async def matches() -> ScheduleState | None:
        state = await state_of(broker, name)
        return state if state is not None and check(state) else None

    return await await_until(matches, timeout=30, what=what)


async def wait_idle(broker: Broker, queue: str, worker: Worker) -> None:
    """Until the queue has nothing pending or unacknowledged (every fire and run settled)."""

    async def idle() -> bool:
        info = await broker.js.consumer_info(names.stream_name(queue), names.CONSUMER_NAME)
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    await await_until(idle, timeout=30, what=f"queue {queue} idle", alive=worker.process)


async def runs_of(broker: Broker, name: str) -> dict[datetime, ResultRecord]:
    """The result records of schedule ``name``'s runs, by slot.

    Read from the stream's subject list and direct gets, so no consumer of the
    bucket (which can start empty-handed just after a server restart) is involved.
    """
    kv = await broker.results.kv()
    prefix = f"$KV.{names.RESULTS_BUCKET}."
    info = await broker.js.stream_info(f"KV_{names.RESULTS_BUCKET}", f"{prefix}{name}.*")
    found: dict[datetime, ResultRecord] = {}
    for subject in info.state.subjects or {}:
        key = subject.removeprefix(prefix)
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue  # expired or deleted since it was listed
        if entry.value:
            slot = datetime.strptime(key.split(".")[-1], "%Y%m%dT%H%M%SZ")
            found[slot.replace(tzinfo=UTC)] = ResultRecord.model_validate_json(entry.value)
    return dict(sorted(found.items()))


def last_slot(state: ScheduleState) -> datetime:
    assert state.last_slot is not None
    return state.last_slot


def fire_lines(worker: Worker, name: str) -> list[str]:
    return [line for line in worker.log().splitlines() if f"schedule {name} slot" in line]


# Runs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "timing"),
    [("@every 1s", {"every": 1}), ("*/1 * * * * *", {"cron": "*/1 * * * * *"})],
    ids=["every", "cron"],
)
async def test_every_fire_becomes_one_run_of_its_slot(
    *,
    broker: Broker,
    schedules: Schedules,
    start_worker: StartWorker,
    queue: str,
    pattern: str,
    timing: dict[str, Any],
) -> None:
    periodic = PeriodicTask(name=new_name(), task="w.add", args=[2, 3], queue=queue, **timing)
    worker = start_worker(queue)
    await schedules.publish(periodic, pattern)
    await wait_state(broker, periodic.name, lambda s: s.runs >= 3, "three runs")
    await schedules.stop(periodic)
    await wait_idle(broker, queue, worker)

    state = await state_of(broker, periodic.name)
    assert state is not None and state.last_slot is not None
    runs = await runs_of(broker, periodic.name)
    assert state.runs == len(runs) >= 3
    slots = list(runs)
    # Consecutive slots, one run each, the last one the state's.
    assert slots == [slots[0] + k * SECOND for k in range(len(slots))]
    assert slots[-1] == state.last_slot
    assert state.last_run == run_id(periodic.name, state.last_slot)
    for record in runs.values():
        assert record.state is TaskState.SUCCESS
        assert record.result == 5
    assert state.skips == 0
    lines = fire_lines(worker, periodic.name)
    assert len(lines) == len(runs)
    assert all(" -> task " in line for line in lines)


async def test_a_second_fire_of_a_handled_slot_enqueues_nothing(broker: Broker, queue: str) -> None:
    # Clients cannot publish Nats-Schedule-Next (the server refuses it, 10212), so the
    # fires are handed to the worker's code directly, on the real bucket and stream.
    periodic = PeriodicTask(name=new_name(), task="w.add", args=[1, 1], queue=queue, every=1)
    await broker.ensure_queue(queue)
    fires = Fires(broker, random.Random(1))
    slot = datetime.now(UTC).replace(microsecond=0)

    def fire(at: datetime) -> Fire:
        return Fire(periodic, at, run_id(periodic.name, at))

    async def last_seq() -> int:
        info = await broker.js.stream_info(names.stream_name(queue))
        return int(info.state.last_seq)

    start = await last_seq()
    assert " -> task " in await fires.fire(fire(slot))
    assert await last_seq() == start + 1
    first = await state_of(broker, periodic.name)
    assert first == ScheduleState(last_slot=slot, last_run=run_id(periodic.name, slot), runs=1)

    for again in (slot, slot - SECOND, slot - 3600 * SECOND):
        assert "handled already" in await fires.fire(fire(again))
    assert await last_seq() == start + 1  # nothing published
    assert await state_of(broker, periodic.name) == first  # nothing counted

    assert " -> task " in await fires.fire(fire(slot + SECOND))
    assert await last_seq() == start + 2
    state = await state_of(broker, periodic.name)
    assert state is not None and (state.runs, state.last_slot) == (2, slot + SECOND)


async def test_two_fires_of_every_slot_run_it_once(
    broker: Broker, schedules: Schedules, start_worker: StartWorker, queue: str
) -> None:
    """The same schedule held twice (a second copy on another subject) makes the server
    fire each slot twice, at the same moment: each slot still runs once, counted once."""
    periodic = PeriodicTask(
        name=new_name(), task="w.add", args=[1, 1], queue=queue, cron="*/1 * * * * *"
    )
    copy = periodic.model_copy(update={"name": f"{periodic.name}-copy"})
    worker = start_worker(queue)
    await schedules.publish(periodic, "*/1 * * * * *")
    # The copy's subject is its own, but its body and header name the same schedule.
    await schedules.publish(copy, "*/1 * * * * *", body=periodic)
    await wait_state(broker, periodic.name, lambda s: s.runs >= 3, "three runs")
    await schedules.stop(periodic)
    await schedules.stop(copy)
    await wait_idle(broker, queue, worker)

    state = await state_of(broker, periodic.name)
    assert state is not None
    runs = await runs_of(broker, periodic.name)
    assert state.runs == len(runs) >= 3
    slots = list(runs)
    assert slots == [slots[0] + k * SECOND for k in range(len(slots))]
    assert all(record.state is TaskState.SUCCESS for record in runs.values())
    log = worker.log().splitlines()
    for slot in slots:
        task = f"[task {run_id(periodic.name, slot)}]"
        ran = [line for line in log if task in line and "running w.add" in line]
        assert len(ran) == 1, (slot, ran)
        fires = [line for line in fire_lines(worker, periodic.name) if task in line]
        counted = [line for line in fires if " -> task " in line]
        assert len(counted) == 1, fires
    # Both copies fired each slot: one of each pair counted, the other not.
    again = [line for line in fire_lines(worker, periodic.name) if "handled already" in line]
    assert len(again) >= len(slots) - 1
    assert await state_of(broker, copy.name) is None


async def test_the_catch_up_fire_after_a_restart_runs_the_missed_slot_once(
    private_nats: NatsServer, start_worker: StartWorker, queue: str
) -> None:
    """A graceful restart across a slot: the server fires once, off the slot, when it is
    back; that fire carries the next slot and stands for the missed one."""
    broker = await Broker.connect(private_nats.url, declare=True, result_ttl=600)
    schedules = Schedules(broker)
    try:
        periodic = PeriodicTask(
            name=new_name(), task="w.add", args=[1, 2], queue=queue, cron="*/5 * * * * *"
        )
        worker = start_worker(queue, url=private_nats.url)
        await schedules.publish(periodic, "*/5 * * * * *")
        state = await wait_state(broker, periodic.name, lambda s: s.runs >= 1, "a first run")
        # Stop early in the interval, so the server is back before the slot after next.
        while datetime.now(UTC) > last_slot(state) + 2 * SECOND:
            more = partial(lambda seen, s: s.runs > seen, state.runs)
            state = await wait_state(broker, periodic.name, more, "another run")
        before = last_slot(state)
        missed = before + 5 * SECOND
        private_nats.stop()
        await await_until(
            lambda: datetime.now(UTC) > missed + 0.3 * SECOND, timeout=10, what="the missed slot"
        )
        private_nats.start()
        state = await wait_state(
            broker, periodic.name, lambda s: last_slot(s) > missed, "the slot after the missed one"
        )
        await schedules.stop(periodic)
        await wait_idle(broker, queue, worker)

        runs = await runs_of(broker, periodic.name)
        state = await wait_state(broker, periodic.name, lambda s: True, "the state")
        assert state.runs == len(runs)
        slots = list(runs)
        assert missed in slots
        # Every slot once, the missed one included, none twice.
        assert slots == [slots[0] + 5 * k * SECOND for k in range(len(slots))]
        assert all(record.state is TaskState.SUCCESS for record in runs.values())
    finally:
        for made in schedules.published:
            await schedules.stop(made)
        await broker.close()


# Concurrency policies ----------------------------------------------------------------------


async def test_forbid_skips_slots_while_the_previous_run_is_unfinished(
    broker: Broker, schedules: Schedules, start_worker: StartWorker, queue: str
) -> None:
    periodic = PeriodicTask(
        name=new_name(),
        task="w.sleep",
        args=[2.5],
        queue=queue,
        every=1,
        concurrency_policy=ConcurrencyPolicy.FORBID,
    )
    worker = start_worker(queue)
    await schedules.publish(periodic, "@every 1s")
    await wait_state(
        broker, periodic.name, lambda s: s.runs >= 2 and s.skips >= 2, "two runs and two skips"
    )
    await schedules.stop(periodic)
    await wait_idle(broker, queue, worker)

    state = await state_of(broker, periodic.name)
    assert state is not None and state.last_slot is not None
    runs = await runs_of(broker, periodic.name)
    assert state.runs == len(runs)
    assert all(record.state is TaskState.SUCCESS for record in runs.values())
    slots = list(runs)
    # A run takes 2.5 s: the two slots after it are skipped, never run alongside it.
    assert all(later - earlier >= 3 * SECOND for earlier, later in itertools.pairwise(slots))
    # Every slot from the first run on was either run or skipped.
    handled = (state.last_slot - slots[0]) // SECOND + 1
    assert state.runs + state.skips == handled
    assert state.last_skip_reason is not None
    assert "STARTED" in state.last_skip_reason
    assert any(run_id(periodic.name, slot) in state.last_skip_reason for slot in slots)
    skipped = [line for line in fire_lines(worker, periodic.name) if " skipped: " in line]
    assert len(skipped) == state.skips


async def test_replace_revokes_the_unfinished_previous_run(
    broker: Broker, schedules: Schedules, start_worker: StartWorker, queue: str
) -> None:
    # Each run fails once and waits 2 s for its retry: the next slot finds it unfinished.
    periodic = PeriodicTask(
        name=new_name(),
        task="w.retry_countdown",
        args=[2.0],
        queue=queue,
        every=1,
        expires=30,
        concurrency_policy=ConcurrencyPolicy.REPLACE,
    )
    worker = start_worker(queue)
    await schedules.publish(periodic, "@every 1s")

    async def two_revoked() -> bool:
        records = (await runs_of(broker, periodic.name)).values()
        return sum(r.state is TaskState.REVOKED for r in records) >= 2

    await await_until(two_revoked, timeout=30, what="two replaced runs", alive=worker.process)
    await schedules.stop(periodic)
    await wait_idle(broker, queue, worker)

    state = await state_of(broker, periodic.name)
    assert state is not None
    runs = await runs_of(broker, periodic.name)
    assert state.runs == len(runs) and state.skips == 0
    slots = list(runs)
    assert slots == [slots[0] + k * SECOND for k in range(len(slots))]
    for slot, later in itertools.pairwise(slots):
        record = runs[slot]
        assert record.state is TaskState.REVOKED, (slot, record)
        assert record.error == f"replaced by {run_id(periodic.name, later)}"
        reason = await broker.revocations.reason(run_id(periodic.name, slot))
        assert reason == f"replaced by {run_id(periodic.name, later)}"
    last = runs[slots[-1]]  # nothing replaced it: its retry ran
    assert last.state is TaskState.SUCCESS and last.result == "retried"


# Malformed fires ---------------------------------------------------------------------------


async def test_malformed_fires_are_dead_lettered_and_the_worker_goes_on(
    broker: Broker, client: Celeriac, schedules: Schedules, start_worker: StartWorker, queue: str
) -> None:
    name = new_name()
    periodic = PeriodicTask(name=name, task="w.add", args=[1, 2], queue=queue, every=5)
    await broker.ensure_queue(queue)
    worker = start_worker(queue)
    # A client cannot set Nats-Schedule-Next: these lack it, like a stray copy would.
    invalid = periodic.model_dump(mode="json") | {"every": 0}
    by_hand = [
        (b'{"name": "oops",', "not valid JSON"),
        (periodic.dumps(), "no Nats-Schedule-Next header"),
        (json.dumps(invalid).encode(), "every"),
    ]
    for data, _ in by_hand:
        headers = {HDR_PERIODIC: name}
        await broker.js.publish(names.task_subject(queue), data, headers=headers)
    # A one-off schedule's fire carries Nats-Schedule-Next: purge, not a time.
    once = (datetime.now(UTC) + SECOND).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    await schedules.publish(periodic, f"@at {once}")
    cases = [*by_hand, (periodic.dumps(), "Nats-Schedule-Next: not an RFC 3339 time: 'purge'")]

    letters = await wait_dead_letters(broker, queue, len(cases))
    assert len(letters) == len(cases)
    assert all(letter.reason is DeadLetterReason.MALFORMED for letter in letters)
    for data, fragment in cases:
        matching = [letter for letter in letters if fragment in letter.error]
        assert len(matching) == 1, (fragment, [letter.error for letter in letters])
        assert matching[0].original == data.decode()
        assert matching[0].original_headers[HDR_PERIODIC] == name
    assert await state_of(broker, name) is None
    await wait_idle(broker, queue, worker)

    result = await client.asend_task("w.add", [2, 3], queue=queue)
    assert await result.aget(timeout=15) == 5
    assert worker.process.alive()


# Catch-up fires ----------------------------------------------------------------------------

YEAR = 365 * 86_400


def yearly(queue: str) -> PeriodicTask:
    """A schedule of New Year's midnights, never published: the server fires nothing of
    it. A run may start up to two years after its slot, so the last one may still run."""
    return define(
        name=new_name(),
        task="w.add",
        queue=queue,
        cron_text="0 0 0 1 1 *",
        args=[2, 3],
        expires=2 * YEAR,
    )


def past_slot(periodic: PeriodicTask) -> datetime:
    slot = latest_slot(periodic, datetime.now(UTC), None)
    assert slot is not None
    return slot


async def last_seq(broker: Broker, queue: str) -> int:
    info = await broker.js.stream_info(names.stream_name(queue))
    return int(info.state.last_seq)


async def test_a_catch_up_fire_runs_its_slot_once(
    broker: Broker, client: Celeriac, start_worker: StartWorker, queue: str
) -> None:
    periodic = yearly(queue)
    slot = past_slot(periodic)
    run = run_id(periodic.name, slot)
    await broker.ensure_queue(queue)
    worker = start_worker(queue)

    await schedulestore.request_catch_up(broker.js, periodic, slot)
    assert await client.AsyncResult(run).aget(timeout=30) == 5
    state = await wait_state(broker, periodic.name, lambda s: s.runs >= 1, "the slot's run")
    assert state == ScheduleState(last_slot=slot, last_run=run, runs=1)
    await wait_idle(broker, queue, worker)
    before = await last_seq(broker, queue)

    # Asked again: its message id names the slot, so the stream drops it.
    await schedulestore.request_catch_up(broker.js, periodic, slot)
    subject, headers, payload = catch_up_message(periodic, slot)
    assert (await broker.js.publish(subject, payload, headers=headers)).duplicate
    assert await last_seq(broker, queue) == before
    # A copy without the message id reaches the worker, which finds the slot handled.
    del headers["Nats-Msg-Id"]
    await broker.js.publish(subject, payload, headers=headers)

    def handled_again() -> list[str]:
        return [line for line in fire_lines(worker, periodic.name) if "handled already" in line]

    [again] = await await_until(
        handled_again, timeout=30, what="the copy handled", alive=worker.process
    )
    assert f"[task {run}]" in again
    # The server's regular fire of the slot (it carries the slot after): clients cannot
    # publish Nats-Schedule-Next (10212), so it goes to the worker's code directly.
    following = cron.next_fire(periodic.cron, None, periodic.time_zone, slot)
    regular = {
        HDR_PERIODIC: periodic.name,
        HDR_SCHEDULER: periodic.subject,
        HDR_SCHEDULE_NEXT: rfc3339(following),
    }
    fire = decode_fire(periodic.dumps(), regular, queue)
    assert fire == Fire(periodic, slot, run)
    assert "handled already" in await Fires(broker, random.Random(1)).fire(fire)
    await wait_idle(broker, queue, worker)

    assert await last_seq(broker, queue) == before + 1  # the copy; no second run
    assert await state_of(broker, periodic.name) == state
    runs = await runs_of(broker, periodic.name)
    assert list(runs) == [slot]
    assert runs[slot].state is TaskState.SUCCESS and runs[slot].result == 5
    lines = fire_lines(worker, periodic.name)
    assert len(lines) == 2 and " -> task " in lines[0], lines
    ran = [line for line in worker.log().splitlines() if f"[task {run}]" in line]
    assert len([line for line in ran if "running w.add" in line]) == 1


async def test_a_catch_up_fire_for_no_slot_or_a_future_one_is_dead_lettered(
    broker: Broker, client: Celeriac, start_worker: StartWorker, queue: str
) -> None:
    periodic = yearly(queue)
    slot = past_slot(periodic)
    cases = {
        slot + 3600 * SECOND: "is not a slot of the schedule",
        # A slot of the schedule, but one still to come.
        cron.next_fire(periodic.cron, None, periodic.time_zone, datetime.now(UTC)): "future",
    }
    await broker.ensure_queue(queue)
    worker = start_worker(queue)
    for moment in cases:
        await schedulestore.request_catch_up(broker.js, periodic, moment)

    letters = await wait_dead_letters(broker, queue, len(cases))
    assert len(letters) == len(cases)
    assert all(letter.reason is DeadLetterReason.MALFORMED for letter in letters)
    for moment, fragment in cases.items():
        at = moment.isoformat().replace("+00:00", "Z")
        matching = [letter for letter in letters if fragment in letter.error]
        assert len(matching) == 1, (fragment, [letter.error for letter in letters])
        assert f"{HDR_CATCH_UP}: {at} " in matching[0].error
        assert matching[0].original == periodic.dumps().decode()
        assert matching[0].original_headers[HDR_CATCH_UP] == at
    assert await state_of(broker, periodic.name) is None
    assert await runs_of(broker, periodic.name) == {}
    await wait_idle(broker, queue, worker)

    result = await client.asend_task("w.add", [2, 3], queue=queue)
    assert await result.aget(timeout=15) == 5
    assert worker.process.alive()
