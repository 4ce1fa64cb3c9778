"""Recurring schedules: crons as nats-server reads them, ``@every`` intervals, time
zones, and a fire's ``Nats-Schedule-Next`` mapped back to the slot it stands for.

The expected instants were checked against nats-server's own cron code (v2.14
``server/cron.go``): for the crons here, and in zones whose daylight saving change
is not at midnight, it computes the same fires as ``next_fire``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from celeriac.cron import (
    MACROS,
    MAX_EVERY_SECONDS,
    check_time_zone,
    every_pattern,
    nats_pattern,
    next_fire,
    parse_every,
    parse_schedule_next,
    slot_of,
)


def utc(text: str) -> datetime:
    """An aware UTC datetime from ISO text such as ``2026-12-02T16:11:20Z``."""
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timedelta(0)
    return moment


def fires(cron: str, tz: str, after: str, count: int) -> list[datetime]:
    """The next ``count`` slots after ``after``, each found from the one before."""
    found, moment = [], utc(after)
    for _ in range(count):
        moment = next_fire(cron, None, tz, moment)
        found.append(moment)
    return found


# --- nats_pattern -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "pattern"),
    [
        ("*/2 * * * * *", "*/2 * * * * *"),
        ("30 2 * * *", "0 30 2 * * *"),
        ("0 9 * * MON-FRI", "0 0 9 * * MON-FRI"),
        ("  0  9 * *   mon-fri ", "0 0 9 * * mon-fri"),
        ("\t0\t9 * * *\n", "0 0 9 * * *"),
        ("0 0 9 * * 0", "0 0 9 * * 0"),
        ("0 0 9 * * SUN", "0 0 9 * * SUN"),
        ("0 0 0 29 2 *", "0 0 0 29 2 *"),
        ("0 0 12 1-31/2 JAN,jul *", "0 0 12 1-31/2 JAN,jul *"),
        ("5/15 0-30/10 */6 * * *", "5/15 0-30/10 */6 * * *"),
        ("0 0 0 1,15 * 1-5", "0 0 0 1,15 * 1-5"),
        ("@hourly", "@hourly"),
        ("@HOURLY", "@hourly"),
        (" @Daily ", "@daily"),
        ("@midnight", "@midnight"),
        ("@weekly", "@weekly"),
        ("@monthly", "@monthly"),
        ("@yearly", "@yearly"),
        ("@annually", "@annually"),
    ],
)  # fmt: skip
def test_a_valid_cron_becomes_the_servers_pattern(cron: str, pattern: str) -> None:
    assert nats_pattern(cron) == pattern
    assert nats_pattern(pattern) == pattern


def test_the_macros_are_the_ones_the_server_knows() -> None:
    assert {"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"} == (
        MACROS
    )


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("", "cron: the pattern is empty"),
        ("   ", "cron: the pattern is empty"),
        ("* * * *", "cron: expected 5 or 6 fields, got 4"),
        ("0 */2 * * * * *", "cron: expected 5 or 6 fields, got 7"),
        ("0 0 9 * * * 2030", "cron: expected 5 or 6 fields, got 7"),
        ("not a cron", "cron: expected 5 or 6 fields, got 3"),
        ("CRON_TZ=UTC */2 * * * * *", "cron: expected 5 or 6 fields, got 7"),
        ("61 * * * *", "cron: bad minute field '61'"),
        ("60 * * * * *", "cron: bad second field '60'"),
        ("0 24 * * *", "cron: bad hour field '24'"),
        ("0 0 0 32 * *", "cron: bad day-of-month field '32'"),
        ("0 0 0 0 * *", "cron: bad day-of-month field '0'"),
        ("0 0 0 30 2 *", "cron: bad day-of-month field '30'"),
        ("0 0 0 * 13 *", "cron: bad month field '13'"),
        ("0 0 0 * 0 *", "cron: bad month field '0'"),
        ("0 0 * * 7", "cron: bad day-of-week field '7'"),
        ("0 0 * * 5-7", "cron: bad day-of-week field '5-7'"),
        ("*/2 * * * * 99", "cron: bad day-of-week field '99'"),
        ("0 0 9 * * MON-SUN", "cron: bad day-of-week field 'MON-SUN'"),
        # Features cronsim has and the server refuses.
        ("0 0 9 L * *", "cron: bad day-of-month field 'L'"),
        ("0 0 9 LW * *", "cron: bad day-of-month field 'LW'"),
        ("0 0 9 15W * *", "cron: bad day-of-month field '15W'"),
        ("0 0 9 * * 5L", "cron: bad day-of-week field '5L'"),
        ("0 0 9 * * MON#2", "cron: bad day-of-week field 'MON#2'"),
        # The server reads `?` as `*`; cronsim refuses it.
        ("0 0 9 ? * *", "cron: bad day-of-month field '?'"),
        ("0 0 9 * * ?", "cron: bad day-of-week field '?'"),
        ("*/0 * * * *", "cron: bad minute field '*/0'"),
        ("5-1 * * * *", "cron: bad minute field '5-1'"),
        ("1,,2 * * * *", "cron: bad minute field '1,,2'"),
        ("MON * * * *", "cron: bad minute field 'MON'"),
        ("0 0 * JAN * *", "cron: bad day-of-month field 'JAN'"),
        ("+5 * * * *", "cron: bad minute field '+5'"),
        ("0 *-5 * * *", "cron: bad hour field '*-5'"),
        ("@reboot", "cron: unknown macro '@reboot'"),
        ("@every 5s", "cron: unknown macro '@every 5s'"),
        ("@daily 1", "cron: unknown macro '@daily 1'"),
    ],
)  # fmt: skip
def test_an_invalid_cron_is_refused_naming_the_problem(cron: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        nats_pattern(cron)


# --- @every -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1),
        ("30s", 30),
        ("5m", 300),
        ("90s", 90),
        ("1h30m", 5400),
        ("2h", 7200),
        ("1d", 86400),
        ("1d2h3m4s", 93784),
        (" 45m ", 2700),
        ("366d", MAX_EVERY_SECONDS),
    ],
)  # fmt: skip
def test_an_interval_is_read_in_seconds(text: str, seconds: int) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "every: the interval is empty"),
        ("0s", "every: '0s' is shorter than 1 s"),
        ("0d0h", "every: '0d0h' is shorter than 1 s"),
        ("500ms", "every: '500ms' is not a whole number of seconds"),
        ("1.5s", "every: '1.5s' is not a whole number of seconds"),
        ("367d", "every: '367d' is longer than 366 days"),
        ("366d1s", "every: '366d1s' is longer than 366 days"),
        ("90", "every: bad interval '90'"),
        ("30m1h", "every: bad interval '30m1h'"),
        ("1h1h", "every: bad interval '1h1h'"),
        ("-5s", "every: bad interval '-5s'"),
        ("5 s", "every: bad interval '5 s'"),
        ("1w", "every: bad interval '1w'"),
        ("banana", "every: bad interval 'banana'"),
    ],
)  # fmt: skip
def test_a_bad_interval_is_refused_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        parse_every(text)


@pytest.mark.parametrize(
    ("seconds", "pattern"),
    [(1, "@every 1s"), (90, "@every 90s"), (86400, "@every 86400s")],
)
def test_an_interval_is_written_as_the_server_reads_it(seconds: int, pattern: str) -> None:
    assert every_pattern(seconds) == pattern
    assert parse_every(pattern.removeprefix("@every ")) == seconds


@pytest.mark.parametrize("seconds", [0, -1, MAX_EVERY_SECONDS + 1, True])
def test_an_interval_out_of_range_is_not_written(seconds: int) -> None:
    with pytest.raises(ValueError, match=r"^every: "):
        every_pattern(seconds)


# --- time zones ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"])
def test_a_known_zone_is_accepted(name: str) -> None:
    assert check_time_zone(name) == ZoneInfo(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Mars/Olympus", "timeZone: unknown time zone 'Mars/Olympus'"),
        ("europe/berlin", "timeZone: unknown time zone 'europe/berlin'"),
        ("Europe", "timeZone: unknown time zone 'Europe'"),
        ("+02:00", "timeZone: unknown time zone '+02:00'"),
        (" UTC", "timeZone: unknown time zone ' UTC'"),
        ("../etc/passwd", "timeZone: unknown time zone '../etc/passwd'"),
        ("/etc/localtime", "timeZone: unknown time zone '/etc/localtime'"),
        ("", "timeZone: the time zone is empty"),
        ("Local", "timeZone: 'Local' is the server host's zone"),
        ("localtime", "timeZone: 'localtime' is the server host's zone"),
    ],
)  # fmt: skip
def test_an_unknown_or_host_zone_is_refused(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        check_time_zone(name)


# --- next_fire ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "tz", "after", "expected"),
    [
        ("*/2 * * * * *", "UTC", "2026-12-02T16:11:17Z", "2026-12-02T16:11:18Z"),
        # Strictly after: a slot is not its own next slot.
        ("*/2 * * * * *", "UTC", "2026-12-02T16:11:18Z", "2026-12-02T16:11:20Z"),
        ("*/2 * * * * *", "UTC", "2026-12-02T16:11:18.999999Z", "2026-12-02T16:11:20Z"),
        ("*/3 * * * * *", "UTC", "2026-12-02T16:11:42.301Z", "2026-12-02T16:11:45Z"),
        ("34 11 17 * * *", "Europe/Berlin", "2026-12-02T16:00:00Z", "2026-12-02T16:11:34Z"),
        ("34 11 17 * * *", "Europe/Berlin", "2026-12-02T16:11:34Z", "2026-12-03T16:11:34Z"),
        ("34 11 17 * * *", "America/New_York", "2026-12-02T16:00:00Z", "2026-12-02T22:11:34Z"),
        ("0 9 * * MON-FRI", "UTC", "2026-12-04T09:00:00Z", "2026-12-07T09:00:00Z"),
        ("@hourly", "UTC", "2026-12-02T16:11:20Z", "2026-12-02T17:00:00Z"),
        ("@daily", "Europe/Berlin", "2026-12-02T16:11:20Z", "2026-12-02T23:00:00Z"),
        ("@midnight", "UTC", "2026-12-02T16:11:20Z", "2026-12-03T00:00:00Z"),
        ("@weekly", "UTC", "2026-12-02T16:11:20Z", "2026-12-06T00:00:00Z"),
        ("@monthly", "UTC", "2026-12-02T16:11:20Z", "2027-01-01T00:00:00Z"),
        ("@yearly", "UTC", "2026-12-02T16:11:20Z", "2027-01-01T00:00:00Z"),
        ("@annually", "Asia/Tokyo", "2026-12-02T16:11:20Z", "2026-12-31T15:00:00Z"),
    ],
)  # fmt: skip
def test_the_next_cron_slot(cron: str, tz: str, after: str, expected: str) -> None:
    found = next_fire(cron, None, tz, utc(after))
    assert found == utc(expected)
    assert found.tzinfo == utc(expected).tzinfo


def test_the_next_slot_is_the_same_whatever_zone_after_is_given_in() -> None:
    after = datetime(2026, 12, 2, 17, 11, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert next_fire("34 11 17 * * *", None, "Europe/Berlin", after) == utc("2026-12-02T16:11:34Z")


@pytest.mark.parametrize(
    ("cron", "after", "expected"),
    [
        # Day-of-month and day-of-week both restricted: a day matching either
        # (the server's `*/2` is not "any day", so it does not make both required).
        ("0 0 0 */2 * MON", "2026-12-10T00:00:00Z", ["12-11", "12-13", "12-14", "12-15"]),
        # A plain `*` among the terms makes the field "any day": then both must match.
        ("0 0 0 1,* * MON", "2026-12-01T00:00:00Z", ["12-07", "12-14", "12-21"]),
        ("0 0 0 1 * */2", "2026-12-01T00:00:00Z", ["12-03", "12-05", "12-06", "12-08"]),
        # `n/step` on weekdays ends at Saturday (6); Sunday is not 7.
        ("0 0 0 * * 6/1", "2026-12-01T00:00:00Z", ["12-05", "12-12", "12-19"]),
        ("0 0 0 * * SAT/1", "2026-12-01T00:00:00Z", ["12-05", "12-12", "12-19"]),
        ("0 0 0 * * 1/3", "2026-12-01T00:00:00Z", ["12-03", "12-07", "12-10", "12-14"]),
        # A range of one value with a step is that value.
        ("0 0 0 * * 5-5/2", "2026-12-01T00:00:00Z", ["12-04", "12-11", "12-18"]),
        ("0 0 0 1-1/3 * *", "2026-12-01T00:00:00Z", ["01-01", "02-01"]),
    ],
)  # fmt: skip
def test_the_days_are_read_as_the_server_reads_them(
    cron: str, after: str, expected: list[str]
) -> None:
    days = [moment.strftime("%m-%d") for moment in fires(cron, "UTC", after, len(expected))]
    assert days == expected


@pytest.mark.parametrize(
    ("every", "after", "expected"),
    [
        # The server's first fire is the publish time rounded to the second plus
        # the interval (FACTS section 1): these are its observed fires.
        (3, "2026-12-02T16:11:40.901Z", "2026-12-02T16:11:44Z"),
        (3, "2026-12-02T16:11:41.100Z", "2026-12-02T16:11:44Z"),
        (5, "2026-12-02T16:11:41.501Z", "2026-12-02T16:11:47Z"),
        (1, "2026-12-02T16:11:41.700Z", "2026-12-02T16:11:43Z"),
        (1, "2026-12-02T16:11:41.499999Z", "2026-12-02T16:11:42Z"),
        (86400, "2026-12-02T16:11:41Z", "2026-12-03T16:11:41Z"),
    ],
)  # fmt: skip
def test_the_next_every_slot_has_no_fixed_phase(every: int, after: str, expected: str) -> None:
    assert next_fire(None, every, "UTC", utc(after)) == utc(expected)


def test_every_ignores_the_zone() -> None:
    after = utc("2026-12-02T16:11:41Z")
    assert next_fire(None, 60, "Asia/Tokyo", after) == next_fire(None, 60, "UTC", after)


Schedule = tuple[str | None, int | None, str]


@pytest.mark.parametrize("call", [next_fire, slot_of])
@pytest.mark.parametrize(
    ("schedule", "moment", "message"),
    [
        (("* * * * *", 5, "UTC"), "2026-12-02T16:11:41Z", "schedule: give either a cron or"),
        ((None, None, "UTC"), "2026-12-02T16:11:41Z", "schedule: give either a cron or"),
        (("* * * * *", None, "UTC"), "2026-12-02T16:11:41", "schedule: 2026-12-02T16:11:41 has no"),
        (("* * * * *", None, "Mars/Olympus"), "2026-12-02T16:11:41Z", "timeZone: unknown"),
        (("61 * * * *", None, "UTC"), "2026-12-02T16:11:41Z", "cron: bad minute field '61'"),
        ((None, 0, "UTC"), "2026-12-02T16:11:41Z", "every: 0 s is not between"),
    ],
)  # fmt: skip
def test_a_bad_schedule_has_no_slots(
    call: Callable[[str | None, int | None, str, datetime], datetime],
    schedule: Schedule,
    moment: str,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        call(*schedule, datetime.fromisoformat(moment))


# --- slot_of ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "tz", "schedule_next", "slot"),
    [
        ("*/2 * * * * *", "UTC", "2026-12-02T16:11:20Z", "2026-12-02T16:11:18Z"),
        # A catch-up fire after a failover, off-slot at 17:47:47.012, carries the
        # next regular slot (FACTS section 7) and stands for the slot before it.
        ("*/2 * * * * *", "UTC", "2026-12-02T17:47:48Z", "2026-12-02T17:47:46Z"),
        # The regular fire at 17:47:48 carries 17:47:50: a different slot.
        ("*/2 * * * * *", "UTC", "2026-12-02T17:47:50Z", "2026-12-02T17:47:48Z"),
        ("0 9 * * *", "Europe/Berlin", "2026-12-03T09:00:00+01:00", "2026-12-02T08:00:00Z"),
        ("34 11 17 * * *", "Europe/Berlin", "2026-12-03T17:11:34+01:00", "2026-12-02T16:11:34Z"),
        # A daily cron due during a graceful restart fires once at restart, with
        # tomorrow's slot as next (FACTS section 6): it stands for today's slot.
        ("34 13 16 * * *", "UTC", "2026-12-03T16:13:34Z", "2026-12-02T16:13:34Z"),
        ("0 9 * * MON-FRI", "UTC", "2026-12-07T09:00:00Z", "2026-12-04T09:00:00Z"),
        ("@hourly", "UTC", "2026-12-02T17:00:00Z", "2026-12-02T16:00:00Z"),
        ("@daily", "Europe/Berlin", "2026-12-02T23:00:00Z", "2026-12-01T23:00:00Z"),
        ("@monthly", "UTC", "2027-01-01T00:00:00Z", "2026-12-01T00:00:00Z"),
        # A fraction in the header still maps to the slot strictly before.
        ("*/2 * * * * *", "UTC", "2026-12-02T16:11:20.5Z", "2026-12-02T16:11:20Z"),
    ],
)  # fmt: skip
def test_a_cron_fire_maps_to_its_slot(cron: str, tz: str, schedule_next: str, slot: str) -> None:
    found = slot_of(cron, None, tz, parse_schedule_next(schedule_next))
    assert found == utc(slot)
    assert found.tzinfo == utc(slot).tzinfo


@pytest.mark.parametrize(
    ("every", "schedule_next", "slot"),
    [
        (1, "2026-12-02T16:11:20Z", "2026-12-02T16:11:19Z"),
        (3, "2026-12-02T16:11:47Z", "2026-12-02T16:11:44Z"),
        (86400, "2026-12-03T16:11:20Z", "2026-12-02T16:11:20Z"),
    ],
)
def test_an_every_fire_maps_to_its_slot(every: int, schedule_next: str, slot: str) -> None:
    assert slot_of(None, every, "UTC", parse_schedule_next(schedule_next)) == utc(slot)


def test_consecutive_fires_map_to_consecutive_slots() -> None:
    slots = fires("*/7 13 9 * * *", "Europe/Berlin", "2026-12-02T00:00:00Z", 12)
    for earlier, later in pairwise(slots):
        assert slot_of("*/7 13 9 * * *", None, "Europe/Berlin", later) == earlier


# --- daylight saving ----------------------------------------------------------------------
#
# A daily 02:30 in Europe/Berlin. On 2026-03-29 clocks jump from 02:00 to 03:00, so
# 02:30 does not exist; on 2026-10-25 they go back from 03:00 to 02:00, so 02:30
# happens twice. Celeriac hands the server the six-field `0 30 2 * * *`, and
# cronsim, like the server, steps through real time for a six-field cron (its
# Debian-cron adjustments apply only to five-field input): no run on the spring
# day, two runs an hour apart on the autumn day.

SPRING = [
    "2026-03-27T01:30:00Z",  # 02:30 CET
    "2026-03-28T01:30:00Z",  # 02:30 CET
    # 2026-03-29: no 02:30, no run.
    "2026-03-30T00:30:00Z",  # 02:30 CEST
    "2026-03-31T00:30:00Z",  # 02:30 CEST
]
AUTUMN = [
    "2026-10-23T00:30:00Z",  # 02:30 CEST
    "2026-10-24T00:30:00Z",  # 02:30 CEST
    "2026-10-25T00:30:00Z",  # 02:30 CEST, the first 02:30
    "2026-10-25T01:30:00Z",  # 02:30 CET, the second 02:30
    "2026-10-26T01:30:00Z",  # 02:30 CET
]


@pytest.mark.parametrize("cron", ["30 2 * * *", "0 30 2 * * *"])
@pytest.mark.parametrize(
    ("after", "expected"),
    [("2026-03-26T12:00:00Z", SPRING), ("2026-10-22T12:00:00Z", AUTUMN)],
    ids=["spring", "autumn"],
)
def test_a_daily_0230_across_daylight_saving_changes(
    cron: str, after: str, expected: list[str]
) -> None:
    assert fires(cron, "Europe/Berlin", after, len(expected)) == [utc(t) for t in expected]


@pytest.mark.parametrize("expected", [SPRING, AUTUMN], ids=["spring", "autumn"])
def test_each_daylight_saving_fire_maps_back_to_its_own_slot(expected: list[str]) -> None:
    slots = [utc(t) for t in expected]
    for slot, schedule_next in pairwise(slots):
        # The fire for `slot` carries the next slot, in the zone's offset form.
        header = schedule_next.astimezone(ZoneInfo("Europe/Berlin")).isoformat()
        assert slot_of("30 2 * * *", None, "Europe/Berlin", parse_schedule_next(header)) == slot
    # The two autumn fires are distinct slots.
    assert len(set(slots)) == len(slots)


def test_hourly_keeps_real_hours_across_daylight_saving_changes() -> None:
    spring = fires("@hourly", "Europe/Berlin", "2026-03-29T00:00:00Z", 3)
    assert spring == [utc(f"2026-03-29T0{h}:00:00Z") for h in (1, 2, 3)]
    autumn = fires("@hourly", "Europe/Berlin", "2026-10-24T23:00:00Z", 4)
    assert autumn == [utc(f"2026-10-25T0{h}:00:00Z") for h in (0, 1, 2, 3)]


# --- parse_schedule_next ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-02T16:11:20Z", "2026-12-02T16:11:20Z"),
        ("2026-12-03T17:11:34+01:00", "2026-12-03T16:11:34Z"),
        ("2026-12-04T01:11:45+09:00", "2026-12-03T16:11:45Z"),
        ("2026-12-02T10:00:00-05:30", "2026-12-02T15:30:00Z"),
        ("2026-12-02T16:11:04.5Z", "2026-12-02T16:11:04.500000Z"),
        ("2026-12-02T16:11:04.123456789Z", "2026-12-02T16:11:04.123456Z"),
        ("2026-12-02T17:11:04.000001+01:00", "2026-12-02T16:11:04.000001Z"),
        ("2026-12-02t16:11:20z", "2026-12-02T16:11:20Z"),
        (" 2026-12-02T16:11:20Z ", "2026-12-02T16:11:20Z"),
    ],
)  # fmt: skip
def test_the_next_fire_header_is_read(value: str, expected: str) -> None:
    parsed = parse_schedule_next(value)
    assert parsed == utc(expected)
    assert parsed.tzinfo == utc(expected).tzinfo


@pytest.mark.parametrize(
    "value",
    [
        "",
        "purge",
        "garbage",
        "2026-12-02T16:11:20",
        "2026-12-02 16:11:20Z",
        "20261202T161120Z",
        "2026-12-02",
        "2026-13-02T16:11:20Z",
        "2026-12-02T24:00:00Z",
        "2026-12-02T16:11:20.Z",
        "2026-12-02T16:11:20.1234567890Z",
        "2026-12-02T16:11:20+0100",
        "2026-12-02T16:11:20+25:00",
    ],
)
def test_a_bad_next_fire_header_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"^Nats-Schedule-Next: not an RFC 3339 time"):
        parse_schedule_next(value)
