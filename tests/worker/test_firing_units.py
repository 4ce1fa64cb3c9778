"""Pure parts of handling a periodic task's fire: decoding, windows and the decisions."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest

from celeriac.periodic import catch_up_message, define, run_window
from celeriac.protocol.envelope import DeadLetterReason
from celeriac.protocol.periodic import (
    HDR_CATCH_UP,
    HDR_PERIODIC,
    HDR_SCHEDULE_NEXT,
    HDR_SCHEDULER,
    ConcurrencyPolicy,
    PeriodicTask,
    ScheduleState,
)
from celeriac.protocol.states import TaskState
from celeriac.worker_runtime.decoding import Rejection, decode_periodic
from celeriac.worker_runtime.firing import (
    CATCH_UP_LEEWAY,
    FIRE_RETRY_DELAY,
    STALE_STARTED,
    STATE_ATTEMPTS,
    Fire,
    Fires,
    ScheduleStates,
    StateConflictError,
    after_run,
    after_skip,
    already_handled,
    decode_fire,
    is_fire,
    jitter_delay,
    previous_blocks,
    run_message,
)

T0 = datetime(2026, 12, 2, 16, 11, 20, tzinfo=UTC)
S = timedelta(seconds=1)


def periodic(**fields: Any) -> PeriodicTask:
    base: dict[str, Any] = {"name": "tick", "task": "w.add", "queue": "q", "every": 1}
    if "cron" in fields:
        base.pop("every")
    return PeriodicTask(**{**base, **fields})


def body(**fields: Any) -> bytes:
    doc: dict[str, Any] = {"v": 1, "name": "tick", "task": "w.add", "queue": "q", "every": 5}
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def fire_headers(next_fire: str | None = "2026-12-02T16:11:20Z") -> dict[str, str]:
    headers = {HDR_PERIODIC: "tick", HDR_SCHEDULER: "celeriac.schedules.q.periodic.tick"}
    if next_fire is not None:
        headers[HDR_SCHEDULE_NEXT] = next_fire
    return headers


def fire_at(slot: datetime, **fields: Any) -> Fire:
    return Fire(periodic(**fields), slot, f"tick.{slot:%Y%m%dT%H%M%SZ}")


# Recognizing and decoding a fire -------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, False),
        ({}, False),
        ({"Celeriac-Task": "w.add"}, False),
        ({HDR_PERIODIC: "tick"}, True),
        ({HDR_PERIODIC: ""}, True),
    ],
)
def test_a_fire_is_told_by_its_header(headers: dict[str, str] | None, expected: bool) -> None:
    assert is_fire(headers) is expected


@pytest.mark.parametrize(
    ("data", "headers", "slot", "run"),
    [
        # @every 5s: the slot is the next fire minus the interval.
        (body(), fire_headers(), T0 - 5 * S, "tick.20261202T161115Z"),
        (body(), fire_headers("2026-12-02T16:11:20.4Z"), T0 - 5 * S, "tick.20261202T161115Z"),
        # A cron: the latest slot before the next fire, in the schedule's zone.
        (body(every=None, cron="*/2 * * * * *"), fire_headers(), T0 - 2 * S, None),
        (
            body(every=None, cron="34 11 17 * * *", time_zone="Europe/Berlin"),
            fire_headers("2026-12-03T17:11:34+01:00"),
            datetime(2026, 12, 2, 16, 11, 34, tzinfo=UTC),
            "tick.20261202T161134Z",
        ),
    ],
)
def test_decode_fire_finds_the_slot_and_run(
    data: bytes, headers: dict[str, str], slot: datetime, run: str | None
) -> None:
    fire = decode_fire(data, headers, "q")
    assert isinstance(fire, Fire), fire
    assert fire.slot == slot
    assert fire.run == (run or f"tick.{slot:%Y%m%dT%H%M%SZ}")
    assert fire.periodic.name == "tick"


@pytest.mark.parametrize(
    ("data", "headers", "fragment"),
    [
        (b"not json{", fire_headers(), "not valid JSON:"),
        (b"[1, 2]", fire_headers(), "invalid periodic task: expected a JSON object, got list"),
        (b'{"name": "tick", "name": "tock"}', fire_headers(), "appears twice"),
        (body(every=0), fire_headers(), "every:"),
        (body(every="5"), fire_headers(), "every:"),
        (body(every=None), fire_headers(), "exactly one of cron and every"),
        (body(name="Not A Name"), fire_headers(), "name:"),
        (body(task=""), fire_headers(), "task:"),
        (body(v=2), fire_headers(), "v:"),
        (body(concurrency_policy="Sometimes"), fire_headers(), "concurrency_policy:"),
        (body(), fire_headers(None), "no Nats-Schedule-Next header"),
        (body(), fire_headers("yesterday"), "Nats-Schedule-Next: not an RFC 3339 time"),
        (body(), fire_headers("purge"), "Nats-Schedule-Next: not an RFC 3339 time"),
        (body(), fire_headers("2026-12-02T16:11:20"), "Nats-Schedule-Next: not an RFC 3339 time"),
        (body(), fire_headers("2026-12-02T16:11:20Z" * 10), "not an RFC 3339 time"),
        (body(every=None, cron="*/2 * * *"), fire_headers(), "cron:"),
        (
            body(every=None, cron="* * * * * *", time_zone="Mars/Olympus"),
            fire_headers(),
            "timeZone",
        ),
        (body(queue="other"), fire_headers(), "is not the queue it came from"),
    ],
)
def test_malformed_fires_are_rejected_naming_the_problem(
    data: bytes, headers: dict[str, str], fragment: str
) -> None:
    rejection = decode_fire(data, headers, "q")
    assert isinstance(rejection, Rejection), rejection
    assert rejection.reason is DeadLetterReason.MALFORMED
    assert fragment in rejection.error
    assert rejection.task_id is None
    assert len(rejection.error) < 600


def test_a_rejected_fire_names_its_task_only_when_the_body_is_valid() -> None:
    missing = decode_fire(body(), fire_headers(None), "q")
    assert isinstance(missing, Rejection) and missing.task == "w.add"
    invalid = decode_periodic(body(every=0, task="bad\nname"))
    assert isinstance(invalid, Rejection) and invalid.task is None


@pytest.mark.parametrize("policy", list(ConcurrencyPolicy))
def test_decode_periodic_reads_what_the_sdk_writes(policy: ConcurrencyPolicy) -> None:
    written = periodic(
        cron="0 0 2 * * *", time_zone="Europe/Berlin", jitter=3, expires=60,
        concurrency_policy=policy, args=[1, {"a": None}], headers={"x": "y"},
    )  # fmt: skip
    assert decode_periodic(written.dumps()) == written


# Windows, expiry and jitter ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "slot", "window"),
    [
        ({"every": 30}, T0, timedelta(seconds=30)),
        ({"every": 30, "expires": 5.5}, T0, timedelta(seconds=5.5)),
        ({"cron": "*/2 * * * * *"}, T0, timedelta(seconds=2)),
        ({"cron": "0 0 2 * * *"}, datetime(2026, 12, 2, 2, tzinfo=UTC), timedelta(days=1)),
        ({"cron": "0 0 2 * * *", "expires": 600}, T0, timedelta(minutes=10)),
        # 03:00 Berlin is 02:00 UTC in winter; the spring change makes that day 23 hours.
        (
            {"cron": "0 0 3 * * *", "time_zone": "Europe/Berlin"},
            datetime(2027, 3, 27, 2, tzinfo=UTC),
            timedelta(hours=23),
        ),
    ],
)
def test_run_window(fields: dict[str, Any], slot: datetime, window: timedelta) -> None:
    assert run_window(periodic(**fields), slot) == window


def test_run_message_is_an_ordinary_task_that_expires_with_its_window() -> None:
    fire = fire_at(T0, every=10, args=[1, 2], kwargs={"k": "v"}, headers={"h": "1"}, task="w.aadd")
    message = run_message(fire)
    assert message.id == "tick.20261202T161120Z"
    assert (message.task, message.args, message.kwargs) == ("w.aadd", [1, 2], {"k": "v"})
    assert (message.queue, message.headers) == ("q", {"h": "1"})
    assert message.expires == T0 + 10 * S
    assert message.eta is None and message.retries == 0


@pytest.mark.parametrize("jitter", [0.0, 0.5, 30.0])
def test_jitter_delay_is_within_the_jitter(jitter: float) -> None:
    rng = random.Random(7)
    delays = [jitter_delay(periodic(jitter=jitter), rng) for _ in range(200)]
    if jitter == 0:
        assert delays == [None] * 200
    else:
        assert all(d is not None and 0 <= d <= jitter for d in delays)
        assert len(set(delays)) > 100


# Decisions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "slot", "handled"),
    [
        (None, T0, False),
        (ScheduleState(), T0, False),
        (ScheduleState(last_slot=T0 - S), T0, False),
        (ScheduleState(last_slot=T0), T0, True),
        (ScheduleState(last_slot=T0 + S), T0, True),
        (ScheduleState(last_slot=T0.replace(tzinfo=None)), T0, True),  # naive means UTC
        (ScheduleState(last_slot=T0.astimezone(UTC) - 3600 * S), T0 - 2 * 3600 * S, True),
    ],
)
def test_already_handled(state: ScheduleState | None, slot: datetime, handled: bool) -> None:
    assert already_handled(state, slot) is handled


DEADLINE = T0 + 10 * S


@pytest.mark.parametrize(
    ("previous", "deadline", "now", "blocks"),
    [
        # Final runs never block.
        (TaskState.SUCCESS, DEADLINE, T0, False),
        (TaskState.FAILURE, DEADLINE, T0, False),
        (TaskState.REVOKED, DEADLINE, T0, False),
        # Not started (nothing recorded, or PENDING): only while it can still start.
        (None, DEADLINE, T0, True),
        (None, DEADLINE, DEADLINE - S, True),
        (None, DEADLINE, DEADLINE, False),
        (None, DEADLINE, DEADLINE + 3600 * S, False),
        (TaskState.PENDING, DEADLINE, T0, True),
        (TaskState.PENDING, DEADLINE, DEADLINE + S, False),
        # Waiting for a retry: the retry is refused past the deadline, so the same.
        (TaskState.RETRY, DEADLINE, T0, True),
        (TaskState.RETRY, DEADLINE, DEADLINE + S, False),
        # Running: blocks past its deadline, until the record is taken for a leftover.
        (TaskState.STARTED, DEADLINE, T0, True),
        (TaskState.STARTED, DEADLINE, DEADLINE + 3600 * S, True),
        (TaskState.STARTED, DEADLINE, DEADLINE + STALE_STARTED, False),
        # No slot known for the previous run: only a running one counts.
        (None, None, T0, False),
        (TaskState.RETRY, None, T0, False),
        (TaskState.STARTED, None, T0, True),
    ],
)
def test_previous_blocks(
    previous: TaskState | None, deadline: datetime | None, now: datetime, blocks: bool
) -> None:
    assert previous_blocks(previous, deadline, now) is blocks


RUN0 = "tick.20261202T161120Z"


@pytest.mark.parametrize(
    ("state", "slot", "expected"),
    [
        (None, T0, ScheduleState(last_slot=T0, last_run=RUN0, runs=1)),
        (
            ScheduleState(last_slot=T0 - S, last_run="tick.x", runs=4, skips=2),
            T0,
            ScheduleState(last_slot=T0, last_run=RUN0, runs=5, skips=2),
        ),
        # Another worker counted this very slot in the meantime: nothing to write.
        (ScheduleState(last_slot=T0, last_run=RUN0, runs=5), T0, None),
        # A later slot was written first: this run still counts, the later slot stays.
        (
            ScheduleState(last_slot=T0 + S, last_run="tick.later", runs=5),
            T0,
            ScheduleState(last_slot=T0 + S, last_run="tick.later", runs=6),
        ),
    ],
)
def test_after_run(
    state: ScheduleState | None, slot: datetime, expected: ScheduleState | None
) -> None:
    assert after_run(state, fire_at(slot)) == expected


@pytest.mark.parametrize(
    ("state", "slot", "expected"),
    [
        (None, T0, ScheduleState(last_slot=T0, skips=1, last_skip_reason="busy")),
        (
            ScheduleState(last_slot=T0 - S, last_run="tick.x", runs=4, skips=2),
            T0,
            ScheduleState(
                last_slot=T0, last_run="tick.x", runs=4, skips=3, last_skip_reason="busy"
            ),
        ),
        (ScheduleState(last_slot=T0, last_run="tick.x", runs=4, skips=2), T0, None),
        (ScheduleState(last_slot=T0 + S, last_run="tick.x", runs=4), T0, None),
    ],
)
def test_after_skip(
    state: ScheduleState | None, slot: datetime, expected: ScheduleState | None
) -> None:
    assert after_skip(state, fire_at(slot), "busy") == expected


def test_states_round_trip_through_json() -> None:
    state = after_run(ScheduleState(runs=2, skips=1, last_skip_reason="r"), fire_at(T0))
    assert state is not None
    assert ScheduleState.model_validate_json(state.dumps()) == state


# Failure paths, without a server -------------------------------------------------------------


class FakeDelivery:
    queue = "q"

    def __init__(self) -> None:
        self.settled: list[tuple[str, float | None]] = []

    async def ack(self) -> None:
        self.settled.append(("ack", None))

    async def nak(self, delay: float | None = None) -> None:
        self.settled.append(("nak", delay))


class FakeStates(ScheduleStates):
    """A bucket where every write loses to another writer."""

    def __init__(self) -> None:
        self.reads = 0
        self.writes = 0

    async def read(self, name: str) -> tuple[ScheduleState | None, int]:
        self.reads += 1
        return ScheduleState(runs=self.reads), self.reads

    async def write(self, name: str, state: ScheduleState, revision: int) -> bool:
        self.writes += 1
        return False


async def test_a_fire_that_cannot_be_handled_is_naked_with_a_delay() -> None:
    class Failing(Fires):
        async def fire(self, fire: Fire) -> str:
            raise TimeoutError("no acknowledgement")

    fires = Failing(cast(Any, SimpleNamespace(declarer=None)), random.Random(1))
    delivery = FakeDelivery()
    await fires.handle(cast(Any, delivery), fire_at(T0))
    assert delivery.settled == [("nak", FIRE_RETRY_DELAY)]


async def test_a_handled_fire_is_acked() -> None:
    class Handled(Fires):
        async def fire(self, fire: Fire) -> str:
            return "done"

    fires = Handled(cast(Any, SimpleNamespace(declarer=None)), random.Random(1))
    delivery = FakeDelivery()
    await fires.handle(cast(Any, delivery), fire_at(T0))
    assert delivery.settled == [("ack", None)]


async def test_state_writes_give_up_after_a_few_conflicts() -> None:
    states = FakeStates()
    with pytest.raises(StateConflictError, match="changed at each of"):
        await states.change("tick", lambda s: after_run(s, fire_at(T0)), None, 0)
    assert states.writes == STATE_ATTEMPTS
    assert states.reads == STATE_ATTEMPTS


async def test_a_state_change_with_nothing_to_write_writes_nothing() -> None:
    states = FakeStates()
    counted = ScheduleState(last_slot=T0, last_run=RUN0, runs=1)
    assert not await states.change("tick", lambda s: after_run(s, fire_at(T0)), counted, 3)
    assert states.writes == 0


# Catch-up fires -----------------------------------------------------------------------------

HOURLY = body(every=None, cron="0 0 * * * *")
AT_16 = datetime(2026, 12, 2, 16, tzinfo=UTC)
AT_17 = datetime(2026, 12, 2, 17, tzinfo=UTC)


def catch_up_headers(slot: str, **more: str) -> dict[str, str]:
    return {HDR_PERIODIC: "tick", HDR_CATCH_UP: slot, **more}


@pytest.mark.parametrize(
    ("data", "headers", "now", "slot"),
    [
        # A slot of the cron, not after now.
        (HOURLY, catch_up_headers("2026-12-02T16:00:00Z"), T0, AT_16),
        (HOURLY, catch_up_headers("2026-12-02T17:00:00+01:00"), T0, AT_16),
        (HOURLY, catch_up_headers("2026-12-02T03:00:00Z"), T0, AT_16 - 13 * 3600 * S),
        # A little ahead of our clock is taken: clocks differ.
        (HOURLY, catch_up_headers("2026-12-02T17:00:00Z"), AT_17 - CATCH_UP_LEEWAY, AT_17),
        (body(), catch_up_headers("2026-12-02T16:11:25Z"), T0, T0 + CATCH_UP_LEEWAY),
        # In the schedule's zone: 03:00 in Berlin is 02:00 UTC in winter.
        (body(every=None, cron="0 0 3 * * *", time_zone="Europe/Berlin"),
         catch_up_headers("2026-12-02T02:00:00Z"), T0, AT_16 - 14 * 3600 * S),
        # every has no fixed phase: any time not in the future.
        (body(), catch_up_headers("2026-12-02T16:07:03Z"), T0, T0 - 257 * S),
        (body(every=3600), catch_up_headers("2020-01-01T00:00:01Z"), T0,
         datetime(2020, 1, 1, 0, 0, 1, tzinfo=UTC)),
        # Both headers: the server's wins, whatever the other says.
        (body(), fire_headers() | {HDR_CATCH_UP: "2026-12-02T16:00:00Z"}, T0, T0 - 5 * S),
        (body(), fire_headers() | {HDR_CATCH_UP: "garbage"}, T0, T0 - 5 * S),
        (HOURLY, fire_headers("2026-12-02T17:00:00Z") | {HDR_CATCH_UP: "2099-01-01T00:00:00Z"},
         T0, AT_16),
    ],
)  # fmt: skip
def test_a_catch_up_fire_stands_for_the_slot_it_names(
    data: bytes, headers: dict[str, str], now: datetime, slot: datetime
) -> None:
    fire = decode_fire(data, headers, "q", now=now)
    assert isinstance(fire, Fire), fire
    assert fire.slot == slot
    assert fire.run == f"tick.{slot:%Y%m%dT%H%M%SZ}"


@pytest.mark.parametrize(
    ("data", "headers", "fragment"),
    [
        # Not a slot of the cron.
        (HOURLY, catch_up_headers("2026-12-02T15:30:00Z"),
         "Celeriac-Catch-Up: 2026-12-02T15:30:00Z is not a slot of the schedule"),
        (HOURLY, catch_up_headers("2026-12-02T16:00:00.5Z"), "is not a slot of the schedule"),
        (body(every=None, cron="0 0 3 * * *", time_zone="Europe/Berlin"),
         catch_up_headers("2026-12-02T03:00:00Z"), "is not a slot of the schedule"),
        # In the future, beyond the leeway.
        (HOURLY, catch_up_headers("2026-12-02T17:00:00Z"),
         "Celeriac-Catch-Up: 2026-12-02T17:00:00Z is in the future"),
        (body(), catch_up_headers("2026-12-02T16:11:26Z"), "is in the future"),
        (body(), catch_up_headers("2027-01-01T00:00:00Z"), "is in the future"),
        # Not a time.
        (body(), catch_up_headers("yesterday"), "not an RFC 3339 time: 'yesterday'"),
        (body(), catch_up_headers("2026-12-02T16:00:00"), "not an RFC 3339 time"),
        (body(), catch_up_headers("2026-12-02T16:00:00Z" * 4),
         "Celeriac-Catch-Up: not an RFC 3339 time: '2026-12-02T16:00:00Z"),
        # Neither header.
        (body(), {HDR_PERIODIC: "tick"}, "no Nats-Schedule-Next header (nor Celeriac-Catch-Up)"),
        (body(), {}, "no Nats-Schedule-Next header (nor Celeriac-Catch-Up)"),
    ],
)  # fmt: skip
def test_a_catch_up_fire_for_no_slot_is_rejected(
    data: bytes, headers: dict[str, str], fragment: str
) -> None:
    rejection = decode_fire(data, headers, "q", now=T0)
    assert isinstance(rejection, Rejection), rejection
    assert rejection.reason is DeadLetterReason.MALFORMED
    assert rejection.error.startswith("fire of schedule 'tick': ")
    assert fragment in rejection.error
    assert rejection.task == "w.add"
    assert len(rejection.error) < 600


@pytest.mark.parametrize("value", ["yesterday", "2026-12-02T16:00:00"])
def test_an_unreadable_catch_up_time_is_rejected_naming_its_header(value: str) -> None:
    rejection = decode_fire(body(), catch_up_headers(value), "q", now=T0)
    assert isinstance(rejection, Rejection), rejection
    assert f"{HDR_CATCH_UP}: not an RFC 3339 time: {value!r}" in rejection.error


def test_an_over_long_catch_up_value_is_cut_short_in_the_rejection() -> None:
    value = "2026-12-02T16:00:00Z" + "0" * 1000
    rejection = decode_fire(body(), catch_up_headers(value), "q", now=T0)
    assert isinstance(rejection, Rejection), rejection
    assert rejection.error.endswith(f"{value[:64]!r}...")
    assert len(rejection.error) < 200


def test_a_catch_up_fire_without_now_uses_the_clock() -> None:
    past = decode_fire(body(), catch_up_headers("2020-01-01T00:00:00Z"), "q")
    assert isinstance(past, Fire), past
    future = decode_fire(body(), catch_up_headers("2999-01-01T00:00:00Z"), "q")
    assert isinstance(future, Rejection) and "is in the future" in future.error


def test_the_catch_up_message_decodes_as_a_fire_of_its_slot() -> None:
    p = define(name="tick", task="w.add", queue="q", cron_text="0 * * * *", args=[1])
    slot = AT_16
    subject, headers, data = catch_up_message(p, slot)
    assert subject == "celeriac.tasks.q"
    assert is_fire(headers)
    fire = decode_fire(data, headers, "q", now=T0)
    assert fire == Fire(p, slot, "tick.20261202T160000Z")
    assert headers["Nats-Msg-Id"] == f"catch-up.{fire.run}"
