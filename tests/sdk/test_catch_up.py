"""Catching up a missed slot, purely: which slot is the latest, which one went by
without a run, and the catch-up fire that asks the workers for its run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from celeriac.periodic import (
    CATCH_UP_GRACE,
    catch_up_message,
    define,
    latest_slot,
    missed_slot,
    run_window,
)
from celeriac.protocol.periodic import (
    HDR_CATCH_UP,
    HDR_PERIODIC,
    PeriodicTask,
    ScheduleState,
)

S = timedelta(seconds=1)
M = 60 * S
H = 60 * M
DAY = 24 * H
NOW = datetime(2026, 12, 2, 16, 30, tzinfo=UTC)
HOUR = datetime(2026, 12, 2, 16, tzinfo=UTC)  # the latest hourly slot at NOW


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def schedule(**options: Any) -> PeriodicTask:
    """A checked schedule; ``cron_text`` or ``every`` as periodic.define takes them."""
    return define(name="report", task="app.tasks.report", queue="q", **options)


HOURLY = schedule(cron_text="0 * * * *")
EVERY_MINUTE = schedule(every=60)


def state(last_slot: datetime | None) -> ScheduleState:
    return ScheduleState(last_slot=last_slot, last_run="report.x" if last_slot else None, runs=1)


# latest_slot --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "at", "anchor", "expected"),
    [
        # A cron: the latest slot at or before the time, whatever the anchor.
        (HOURLY, NOW, None, HOUR),
        (HOURLY, HOUR, None, HOUR),
        (HOURLY, HOUR - S, None, HOUR - H),
        (HOURLY, NOW, HOUR - 5 * H, HOUR),
        (schedule(cron_text="*/5 * * * * *"), NOW + 7 * S, None, NOW + 5 * S),
        (schedule(cron_text="@daily"), NOW, None, datetime(2026, 12, 2, tzinfo=UTC)),
        # Read in the schedule's zone: 02:30 Berlin is 01:30 UTC in winter.
        (
            schedule(cron_text="30 2 * * *", tz="Europe/Berlin"),
            NOW,
            None,
            datetime(2026, 12, 2, 1, 30, tzinfo=UTC),
        ),
        # every: counted from the anchor, none before it or without one.
        (EVERY_MINUTE, NOW, NOW - 150 * S, NOW - 30 * S),
        (EVERY_MINUTE, NOW, NOW, NOW),
        (EVERY_MINUTE, NOW, NOW - 60 * S, NOW),
        (EVERY_MINUTE, NOW, NOW + S, None),
        (EVERY_MINUTE, NOW, None, None),
    ],
)
def test_latest_slot(
    p: PeriodicTask, at: datetime, anchor: datetime | None, expected: datetime | None
) -> None:
    assert latest_slot(p, at, anchor) == expected


# missed_slot --------------------------------------------------------------------------------

BERLIN_0230 = schedule(cron_text="30 2 * * *", tz="Europe/Berlin")
# 2026-03-29 is the spring change in Berlin: 02:30 does not exist that day, so the slot
# of the 28th (01:30 UTC, in winter time) runs until that of the 30th (00:30 UTC).
BERLIN_28TH = utc("2026-03-28T01:30:00Z")
BERLIN_NOON = utc("2026-03-29T12:00:00Z")


@pytest.mark.parametrize(
    ("p", "last", "stored_at", "now", "expected"),
    [
        # The last run is an hour behind: the slot since is missed.
        (HOURLY, HOUR - H, None, NOW, HOUR),
        (HOURLY, HOUR - H, HOUR - DAY, NOW, HOUR),
        # The last run is the latest slot: nothing missed.
        (HOURLY, HOUR, None, NOW, None),
        (HOURLY, HOUR + H, None, NOW, None),
        # The slot's fire may still be on its way: within the grace it is not missed yet.
        (HOURLY, HOUR - H, None, HOUR + 5 * S, None),
        (HOURLY, HOUR - H, None, HOUR + CATCH_UP_GRACE - S, None),
        (HOURLY, HOUR - H, None, HOUR + CATCH_UP_GRACE, HOUR),
        # Its run may start until the next slot; then the window is over, and the next
        # slot is still within its grace.
        (HOURLY, HOUR - 2 * H, None, HOUR + H - S, HOUR),
        (HOURLY, HOUR - 2 * H, None, HOUR + H, None),
        (HOURLY, HOUR - 2 * H, None, HOUR + H + CATCH_UP_GRACE - S, None),
        (HOURLY, HOUR - 2 * H, None, HOUR + H + CATCH_UP_GRACE, HOUR + H),
        # A window (5 s) shorter than the grace: every missed slot is over by then.
        (schedule(cron_text="*/5 * * * * *"), NOW - H, None, NOW, None),
        (schedule(cron_text="*/5 * * * * *"), NOW - H, None, NOW + 2 * S, None),
        # The schedule was stored after the slot: the slot was never the server's.
        (HOURLY, HOUR - H, HOUR + S, NOW, None),
        (HOURLY, None, HOUR + S, NOW, None),
        (HOURLY, HOUR - H, HOUR, NOW, HOUR),
        # No run recorded yet, stored before the slot: that slot is missed.
        (HOURLY, None, HOUR - M, NOW, HOUR),
        (HOURLY, None, None, NOW, HOUR),
        # Several slots missed: only the latest is caught up.
        (HOURLY, HOUR - 7 * H, None, NOW, HOUR),
        (schedule(cron_text="0 2 * * *"), NOW - 5 * DAY, None, NOW,
         datetime(2026, 12, 2, 2, tzinfo=UTC)),
        # every: the slots count from the last one recorded.
        (EVERY_MINUTE, NOW - 150 * S, None, NOW, NOW - 30 * S),
        (EVERY_MINUTE, NOW - 60 * S, None, NOW, None),  # its slot NOW is within the grace
        (EVERY_MINUTE, NOW - 60 * S, None, NOW + CATCH_UP_GRACE, NOW),
        (EVERY_MINUTE, NOW - 30 * S, None, NOW, None),
        (EVERY_MINUTE, None, NOW - H, NOW, None),  # no state: no phase known
        # startingDeadline (expires): how long a missed slot may still run.
        (schedule(cron_text="0 * * * *", expires=600), HOUR - H, None, NOW, None),
        (schedule(cron_text="0 * * * *", expires=600), HOUR - H, None, HOUR + 9 * M, HOUR),
        (schedule(cron_text="0 * * * *", expires=2 * 3600), HOUR - H, None, NOW, HOUR),
        (schedule(cron_text="0 * * * *", expires=2 * 3600), HOUR - H, None, HOUR + 90 * M,
         HOUR + H),
        (schedule(every=60, expires=5), NOW - 150 * S, None, NOW, None),
        (schedule(every=60, expires=3600), NOW - 150 * S, None, NOW, NOW - 30 * S),
        # A daily slot that does not exist on the spring change day: the day before's
        # slot is the latest, and may run until the next one.
        (BERLIN_0230, BERLIN_28TH - DAY, None, BERLIN_NOON, BERLIN_28TH),
        (BERLIN_0230, BERLIN_28TH, None, BERLIN_NOON, None),
        (BERLIN_0230, BERLIN_28TH - DAY, None, utc("2026-03-30T00:29:59Z"), BERLIN_28TH),
        (BERLIN_0230, BERLIN_28TH - DAY, None, utc("2026-03-30T00:30:05Z"), None),
        (BERLIN_0230, BERLIN_28TH, None, utc("2026-03-30T00:31:00Z"),
         utc("2026-03-30T00:30:00Z")),
    ],
)  # fmt: skip
def test_missed_slot(
    p: PeriodicTask,
    last: datetime | None,
    stored_at: datetime | None,
    now: datetime,
    expected: datetime | None,
) -> None:
    recorded = state(last) if last is not None else None
    assert missed_slot(p, recorded, stored_at, now) == expected


def test_the_berlin_slot_before_the_spring_change_has_a_47_hour_window() -> None:
    assert run_window(BERLIN_0230, BERLIN_28TH) == 47 * H


def test_a_state_without_a_slot_is_like_no_state() -> None:
    empty = ScheduleState()
    assert missed_slot(HOURLY, empty, None, NOW) == HOUR
    assert missed_slot(EVERY_MINUTE, empty, None, NOW) is None


@pytest.mark.parametrize("grace", [timedelta(0), 40 * M])
def test_missed_slot_grace_is_a_parameter(grace: timedelta) -> None:
    expected = HOUR if grace < NOW - HOUR else None
    assert missed_slot(HOURLY, state(HOUR - H), None, NOW, grace=grace) == expected


@pytest.mark.parametrize("p", [HOURLY, EVERY_MINUTE], ids=["cron", "every"])
def test_a_naive_last_slot_counts_as_utc(p: PeriodicTask) -> None:
    naive = ScheduleState.model_validate_json(b'{"last_slot": "2026-12-02T15:00:00"}')
    assert naive.last_slot is not None and naive.last_slot.tzinfo is None
    aware = ScheduleState(last_slot=datetime(2026, 12, 2, 15, tzinfo=UTC))
    assert missed_slot(p, naive, None, NOW) == missed_slot(p, aware, None, NOW)


# catch_up_message ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slot", "at", "run"),
    [
        (datetime(2026, 12, 2, 2, tzinfo=UTC), "2026-12-02T02:00:00Z", "20261202T020000Z"),
        (
            datetime(2026, 12, 2, 3, tzinfo=ZoneInfo("Europe/Berlin")),
            "2026-12-02T02:00:00Z",
            "20261202T020000Z",
        ),
        (
            datetime(2026, 7, 1, 23, 59, 59, tzinfo=ZoneInfo("America/New_York")),
            "2026-07-02T03:59:59Z",
            "20260702T035959Z",
        ),
    ],
)
def test_catch_up_message(slot: datetime, at: str, run: str) -> None:
    p = define(
        name="team.nightly",
        task="app.tasks.report",
        queue="emails",
        cron_text="0 2 * * *",
        args=[1, {"a": None}],
        kwargs={"k": "v"},
        headers={"tenant": "acme"},
    )
    subject, headers, body = catch_up_message(p, slot)
    assert subject == "celeriac.tasks.emails"
    assert headers == {
        HDR_PERIODIC: "team.nightly",
        HDR_CATCH_UP: at,
        "Nats-Msg-Id": f"catch-up.team.nightly.{run}",
    }
    assert body == p.dumps()
    assert PeriodicTask.model_validate_json(body) == p


def test_catch_up_messages_of_one_slot_share_their_message_id() -> None:
    """A second request for the slot is dropped by the stream's duplicate window."""
    slot = datetime(2026, 12, 2, 2, tzinfo=UTC)
    ids = {
        catch_up_message(EVERY_MINUTE, slot.astimezone(ZoneInfo(zone)))[1]["Nats-Msg-Id"]
        for zone in ("UTC", "Europe/Berlin", "Asia/Tokyo")
    }
    assert ids == {"catch-up.report.20261202T020000Z"}
    other = catch_up_message(EVERY_MINUTE, slot + S)[1]["Nats-Msg-Id"]
    assert other == "catch-up.report.20261202T020001Z"
