"""Recurring schedules as nats-server's message scheduler reads them.

A recurring task is a schedule message held by the server. Its ``Nats-Schedule``
header is one of:

- a cron of six fields, **seconds first** (``0 30 2 * * *``). The server refuses
  the five-field form, so :func:`nats_pattern` turns a classic five-field cron
  into six fields by putting ``0`` (second zero) in front;
- a macro: ``@hourly``, ``@daily``, ``@midnight``, ``@weekly``, ``@monthly``,
  ``@yearly`` or ``@annually``;
- ``@every <duration>``, an interval of whole seconds, at least one second.

A cron is read in the zone named by ``Nats-Schedule-Time-Zone`` (UTC when there
is none). ``@every`` takes no zone.

Every fire carries ``Nats-Schedule-Next``, the fire planned after it. After a
leader change or a graceful restart the server fires each schedule once, perhaps
off its slot, and that fire too carries the next regular slot. :func:`slot_of`
maps a fire back to the slot it stands for, so a catch-up fire and a regular fire
for the same slot can be told apart.

Crons are evaluated with ``cronsim`` on the six-field form the server receives.
For such a form cronsim steps through real time as the server does, so both agree
on daylight saving changes: a wall-clock time that does not exist on the spring
change day has no run that day, and one that happens twice on the autumn change
day runs twice (once per UTC instant). The exceptions are zones whose clocks
change at midnight (such as America/Santiago, America/Havana, Africa/Cairo,
Atlantic/Azores, Asia/Beirut) or by half an hour (Australia/Lord_Howe): near a
change there, the server skips or moves some slots of its own accord, and
:func:`next_fire` may not predict them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = [
    "MACROS",
    "MAX_EVERY_SECONDS",
    "check_time_zone",
    "every_pattern",
    "nats_pattern",
    "next_fire",
    "parse_every",
    "parse_schedule_next",
    "slot_of",
]

# The macros nats-server accepts, and the six-field cron each one stands for.
_MACRO_CRONS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
MACROS = frozenset(_MACRO_CRONS)

MAX_EVERY_SECONDS = 366 * 24 * 3600
"""The longest ``@every`` interval Celeriac accepts: 366 days."""

_FIELD_NAMES = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_DOM = 3
_MONTH = 4
_DOW = 5
# Day-of-month and day-of-week bounds, to spell out a starred range for cronsim.
_DAY_BOUNDS = {_DOM: (1, 31), _DOW: (0, 6)}
_NAMES = {
    _MONTH: ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
    _DOW: ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"),
}
_FIRST_NAMED = {_MONTH: 1, _DOW: 0}
_DIGITS = re.compile(r"[0-9]+")

_EVERY = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
_UNIT_SECONDS = (86400, 3600, 60, 1)

_RFC3339 = re.compile(
    r"(?P<base>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]{1,9}))?"
    r"(?P<offset>Z|[+-][0-9]{2}:[0-9]{2})"
)


def nats_pattern(cron: str) -> str:
    """The ``Nats-Schedule`` value for a user's cron.

    Whitespace is collapsed. Five fields get a leading ``0`` (second zero), six
    fields are kept, and a macro is kept in lower case. Every field is checked:
    the accepted syntax is what both nats-server and cronsim read the same way,
    numbers, month and weekday names, ``*``, ranges ``a-b``, steps ``/n`` and
    lists ``a,b``. ``L``, ``W``, ``#`` and ``?`` are refused, and so is ``7`` for
    Sunday (write ``0`` or ``SUN``).

    Raises:
        ValueError: naming the problem, e.g. ``cron: bad minute field '61'``.
    """
    return _parse(cron)[0]


def _parse(cron: str) -> tuple[str, str]:
    """The server's pattern for ``cron``, and the expression cronsim evaluates."""
    text = " ".join(cron.split())
    if not text:
        raise ValueError("cron: the pattern is empty")
    if text.startswith("@"):
        macro = text.lower()
        if macro not in MACROS:
            raise ValueError(f"cron: unknown macro {text!r}")
        return macro, _MACRO_CRONS[macro]
    fields = text.split(" ")
    if len(fields) == 5:
        fields.insert(0, "0")
    elif len(fields) != 6:
        raise ValueError(f"cron: expected 5 or 6 fields, got {len(fields)}")
    return " ".join(fields), _cronsim_expression(fields)


def _cronsim_expression(fields: list[str]) -> str:
    """The six fields checked, and written so that cronsim reads them as the server does.

    The two differ in the day fields. The server takes a day field as "any day"
    only when it holds a plain ``*`` (or ``*/1``), and then a day must match both
    day fields, otherwise either. cronsim looks at whether the field starts with
    ``*``. cronsim also counts 7 as a weekday in ``n/step``, and reads a range
    of one value with a step, ``n-n/step``, as ``n/step``. So a starred day field
    becomes ``*`` or an explicit range, a weekday ``n/step`` a range ending at 6,
    and ``n-n/step`` the value ``n``.
    """
    written = [_check_field(index, field) for index, field in enumerate(fields)]
    expression = " ".join(written)
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        message = str(exc)
        for index, name in enumerate(_FIELD_NAMES):
            if message == f"Bad {name}":
                raise ValueError(f"cron: bad {name} field {fields[index]!r}") from None
        raise ValueError(f"cron: invalid pattern {' '.join(fields)!r} ({message})") from None
    return expression


def _check_field(index: int, field: str) -> str:
    """One field checked term by term, and written for cronsim."""
    written = [_check_term(index, field, term) for term in field.split(",")]
    if index in _DAY_BOUNDS and any(any_day for _, any_day in written):
        return "*"
    return ",".join(term for term, _ in written)


def _check_term(index: int, field: str, term: str) -> tuple[str, bool]:
    """One term of a list, written for cronsim, and whether it is a plain ``*``."""
    span, slash, step = term.partition("/")
    if slash and (not _DIGITS.fullmatch(step) or int(step) == 0):
        raise _bad_field(index, field)
    if span == "*":
        any_value = not slash or int(step) == 1
        if index in _DAY_BOUNDS:
            first, last = _DAY_BOUNDS[index]
            return f"{first}-{last}/{step or 1}", any_value
        return term, any_value
    low_text, dash, high_text = span.partition("-")
    low = _check_value(index, field, low_text)
    high = _check_value(index, field, high_text) if dash else None
    if not slash:
        return term, False
    if high is None:
        if index != _DOW:
            return term, False
        high_text, high = "6", 6
    if high == low:
        return low_text, False
    return f"{low_text}-{high_text}/{step}", False


def _check_value(index: int, field: str, value: str) -> int:
    """A number, or a month or weekday name where the field takes names, as a number."""
    names = _NAMES.get(index, ())
    if value.upper() in names:
        return names.index(value.upper()) + _FIRST_NAMED[index]
    if not _DIGITS.fullmatch(value):
        raise _bad_field(index, field)
    if index == _DOW and int(value) > 6:
        raise ValueError(
            f"cron: bad day-of-week field {field!r} (0-6 or SUN-SAT; Sunday is 0 or SUN)"
        )
    return int(value)


def _bad_field(index: int, field: str) -> ValueError:
    return ValueError(f"cron: bad {_FIELD_NAMES[index]} field {field!r}")


def parse_every(text: str) -> int:
    """Seconds in an ``@every`` interval as Celeriac writes it.

    Units are ``d``, ``h``, ``m`` and ``s``, each once and in that order:
    ``"30s"``, ``"5m"``, ``"1h30m"``, ``"2h"``, ``"1d"``. The interval must be
    whole seconds, at least 1 s and at most 366 days.

    Raises:
        ValueError: naming the problem.
    """
    value = text.strip()
    if not value:
        raise ValueError("every: the interval is empty")
    match = _EVERY.fullmatch(value)
    if match is None:
        if "." in value or value.endswith(("ms", "us", "µs", "ns")):
            raise ValueError(f"every: {text!r} is not a whole number of seconds")
        raise ValueError(
            f"every: bad interval {text!r} (write it like '30s', '5m', '1h30m' or '1d')"
        )
    seconds = sum(
        int(amount) * unit
        for amount, unit in zip(match.groups(), _UNIT_SECONDS, strict=True)
        if amount is not None
    )
    if seconds < 1:
        raise ValueError(f"every: {text!r} is shorter than 1 s")
    if seconds > MAX_EVERY_SECONDS:
        raise ValueError(f"every: {text!r} is longer than 366 days")
    return seconds


def every_pattern(seconds: int) -> str:
    """The ``Nats-Schedule`` value for an interval of ``seconds``: ``@every 90s``.

    Raises:
        ValueError: unless 1 <= ``seconds`` <= 366 days.
    """
    _check_every(seconds)
    return f"@every {seconds}s"


def _check_every(seconds: int) -> None:
    if isinstance(seconds, bool) or not 1 <= seconds <= MAX_EVERY_SECONDS:
        raise ValueError(f"every: {seconds!r} s is not between 1 s and 366 days")


def check_time_zone(name: str) -> ZoneInfo:
    """The zone named ``name``: an IANA name such as ``Europe/Berlin``, or ``UTC``.

    ``Local`` and ``localtime`` would mean the zone of whichever host runs the
    nats-server, so they are refused, and so is an empty name.

    Raises:
        ValueError: ``timeZone: unknown time zone 'Mars/Olympus'`` and the like.
    """
    if name in ("Local", "localtime"):
        raise ValueError(
            f"timeZone: {name!r} is the server host's zone; name the zone (e.g. 'Europe/Berlin')"
        )
    if not name:
        raise ValueError("timeZone: the time zone is empty; name one (e.g. 'Europe/Berlin')")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"timeZone: unknown time zone {name!r}") from None


def next_fire(cron: str | None, every: int | None, tz: str, after: datetime) -> datetime:
    """The next slot strictly after ``after``, in UTC.

    A cron is read in the zone ``tz``. For ``every`` the zone is not used, and
    the answer is only an estimate: ``@every`` has no fixed phase on the server
    (its first fire is the publish time rounded to the second plus the
    interval, and a restart starts it afresh), so this is ``after`` rounded to
    the whole second plus the interval.

    Raises:
        ValueError: for an invalid schedule or zone, or a naive ``after``.
    """
    moment = _aware(after)
    if every is not None and cron is None:
        _check_every(every)
        return _whole_second(moment) + timedelta(seconds=every)
    expression, zone = _cron_and_zone(cron, every, tz)
    try:
        found = next(CronSim(expression, moment.astimezone(zone)))
    except StopIteration:
        raise ValueError(f"cron: {cron!r} has no slot after {after.isoformat()}") from None
    return found.astimezone(UTC)


def slot_of(cron: str | None, every: int | None, tz: str, next_fire: datetime) -> datetime:
    """The slot a fire stands for, from the fire's ``Nats-Schedule-Next``, in UTC.

    For a cron it is the latest slot strictly before ``next_fire``, evaluated in
    the zone ``tz``; for ``every`` it is ``next_fire`` minus the interval. A
    catch-up fire, off its slot, carries the next regular slot, so it maps to
    the slot just before, the one it stands in for.

    Raises:
        ValueError: for an invalid schedule or zone, or a naive ``next_fire``.
    """
    moment = _aware(next_fire)
    if every is not None and cron is None:
        _check_every(every)
        return _whole_second(moment) - timedelta(seconds=every)
    expression, zone = _cron_and_zone(cron, every, tz)
    try:
        found = next(CronSim(expression, moment.astimezone(zone), reverse=True))
    except StopIteration:
        raise ValueError(f"cron: {cron!r} has no slot before {next_fire.isoformat()}") from None
    return found.astimezone(UTC)


def _cron_and_zone(cron: str | None, every: int | None, tz: str) -> tuple[str, ZoneInfo]:
    """cronsim's expression for ``cron`` and the zone it is read in."""
    if cron is None or every is not None:
        raise ValueError("schedule: give either a cron or an interval, not both or neither")
    return _parse(cron)[1], check_time_zone(tz)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"schedule: {moment.isoformat()} has no time zone")
    return moment.astimezone(UTC)


def _whole_second(moment: datetime) -> datetime:
    """``moment`` rounded to the nearest whole second, halves up (as the server rounds)."""
    rounded = moment.replace(microsecond=0)
    if moment.microsecond >= 500_000:
        rounded += timedelta(seconds=1)
    return rounded


def parse_schedule_next(value: str) -> datetime:
    """The time in a ``Nats-Schedule-Next`` header, in UTC.

    The header is RFC 3339 with ``Z`` or an offset, and a fraction of up to nine
    digits when it is not zero (``2026-12-02T16:11:20Z``,
    ``2026-12-03T17:11:34+01:00``, ``2026-12-02T16:11:04.5Z``). Digits past
    microseconds are dropped. A one-off schedule's last fire carries ``purge``,
    which is not a time.

    Raises:
        ValueError: for anything else.
    """
    match = _RFC3339.fullmatch(value.strip().upper())
    if match is None:
        raise ValueError(f"Nats-Schedule-Next: not an RFC 3339 time: {value!r}")
    text = match["base"]
    if match["fraction"]:
        text += "." + match["fraction"][:6].ljust(6, "0")
    offset = match["offset"]
    text += "+00:00" if offset == "Z" else offset
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"Nats-Schedule-Next: not an RFC 3339 time: {value!r}") from None
    return parsed.astimezone(UTC)
