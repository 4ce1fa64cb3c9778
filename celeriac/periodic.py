"""Periodic task definitions and their schedule messages, checked and built purely.

A periodic task is one schedule message in its queue's work stream (see
``celeriac.protocol.periodic``): nats-server holds it and fires it on the task subject,
and a worker turns each fire into one run. No process of Celeriac's keeps time.
``celeriac.schedules`` publishes, lists and steers them on a broker.

The schedule message carries ``Nats-TTL: never``. Without it the stream's age limit
(``max_age``, 7 days by default) would remove the message, and the schedule with it.
A suspended schedule keeps its definition on the same subject as a plain message
(``Celeriac-Suspended: 1``, no ``Nats-Schedule``), so it can be listed and resumed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from celeriac import cron
from celeriac.protocol import names
from celeriac.protocol.arguments import check_arguments
from celeriac.protocol.periodic import (
    HDR_CATCH_UP,
    HDR_PERIODIC,
    HDR_SCHEDULE_TIME_ZONE,
    HDR_SCHEDULE_TTL,
    ConcurrencyPolicy,
    PeriodicTask,
    ScheduleState,
    check_schedule_name,
    run_id,
)
from celeriac.protocol.signing import HDR_SIGNATURE, SigningKeys, periodic_id

HDR_SUSPENDED = "Celeriac-Suspended"  # on the plain message that keeps a suspended definition
HDR_TTL = "Nats-TTL"
# The schedule message itself never expires (the stream's max_age would remove it);
# the server does not copy this header onto the fires.
KEEP_FOREVER = "never"


# A cron's interval is the shortest gap between its slots, over this many slots after
# a fixed instant: the same definition always gets the same TTL header.
_INTERVAL_SAMPLES = 8
_INTERVAL_FROM = datetime(2001, 1, 1, tzinfo=UTC)


_NOT_IN_NAME = re.compile(r"[^a-z0-9-]")
_PREFIXES = ("cron: ", "every: ", "timeZone: ")


def schedule_name_for(task_name: str) -> str:
    """The default schedule name of a task: lower-cased, every character outside
    ``[a-z0-9-]`` turned into ``-``, at most 63 characters, no ``-`` at either end."""
    name = _NOT_IN_NAME.sub("-", task_name.lower())[:63].strip("-")
    if not name:
        raise ValueError(f"name: cannot make a schedule name of task {task_name!r}; give name=")
    return name


def _argument_error(argument: str, exc: ValueError) -> ValueError:
    """``exc`` reworded to name the caller's ``argument``."""
    text = str(exc)
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return ValueError(f"{argument}: {text}")


def seconds_of(value: Any, argument: str, *, minimum: float = 0.0) -> float:
    """A number of seconds or a ``timedelta`` as seconds (at least ``minimum``)."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{argument}: expected seconds or a timedelta, not {value!r}")
    if value < minimum:
        raise ValueError(f"{argument}: must be at least {minimum:g} s, not {value!r}")
    return float(value)


def every_seconds(value: Any, argument: str = "every") -> int:
    """An interval as whole seconds: a number, a ``timedelta``, or text (``"5m"``,
    ``"@every 1h30m"``)."""
    if isinstance(value, str):
        text = value.strip()
        text = text[len("@every") :] if text.startswith("@every") else text
        try:
            return cron.parse_every(text)
        except ValueError as exc:
            raise _argument_error(argument, exc) from None
    seconds = seconds_of(value, argument, minimum=1)
    if seconds != int(seconds):
        raise ValueError(f"{argument}: must be whole seconds, not {seconds:g}")
    try:
        cron.every_pattern(int(seconds))
    except ValueError as exc:
        raise _argument_error(argument, exc) from None
    return int(seconds)


def cron_pattern(value: Any, argument: str = "cron") -> str:
    """A cron (5 or 6 fields, or a macro) as the server takes it."""
    if not isinstance(value, str):
        raise ValueError(f"{argument}: expected a cron string, not {value!r}")
    try:
        return cron.nats_pattern(value)
    except ValueError as exc:
        raise _argument_error(argument, exc) from None


def time_zone(value: Any, argument: str = "tz") -> str:
    """``value`` if it names a time zone the schedule can be read in."""
    if not isinstance(value, str):
        raise ValueError(f"{argument}: expected a time zone name, not {value!r}")
    try:
        cron.check_time_zone(value)
    except ValueError as exc:
        raise _argument_error(argument, exc) from None
    return value


def concurrency_policy(value: Any) -> ConcurrencyPolicy:
    """``Allow``, ``Forbid`` or ``Replace`` (any case)."""
    for policy in ConcurrencyPolicy:
        if isinstance(value, str) and value.lower() == policy.value.lower():
            return policy
    known = ", ".join(p.value for p in ConcurrencyPolicy)
    raise ValueError(f"concurrency_policy: expected one of {known}, not {value!r}")


def define(
    *,
    name: str,
    task: str,
    queue: str,
    cron_text: Any = None,
    every: Any = None,
    tz: Any = "UTC",
    args: Any = (),
    kwargs: Any = None,
    policy: Any = "Allow",
    expires: Any = None,
    jitter: Any = 0,
    headers: Mapping[str, str] | None = None,
    arguments: tuple[str, str] = ("cron", "every"),
) -> PeriodicTask:
    """A checked ``PeriodicTask``; ``ValueError`` (``TypeError`` for arguments JSON cannot
    carry) naming the argument at fault. ``arguments`` names ``cron_text`` and ``every``
    as the caller spells them."""
    cron_arg, every_arg = arguments
    if (cron_text is None) == (every is None):
        both = "both" if cron_text is not None else "neither"
        raise ValueError(f"give exactly one of {cron_arg} and {every_arg}, not {both}")
    zone = time_zone(tz)
    if every is not None and zone != "UTC":
        raise ValueError(f"tz: applies to cron schedules only, not to {every_arg}")
    try:
        check_schedule_name(name)
    except ValueError as exc:
        raise ValueError(f"name: {exc}") from None
    values: dict[str, Any] = {
        "name": name,
        "task": task,
        "queue": queue,
        "cron": cron_pattern(cron_text, cron_arg) if cron_text is not None else None,
        "every": every_seconds(every, every_arg) if every is not None else None,
        "time_zone": zone,
        "concurrency_policy": concurrency_policy(policy),
        "expires": None if expires is None else seconds_of(expires, "expires"),
        "jitter": seconds_of(jitter, "jitter"),
        "headers": dict(headers or {}),
    }
    check_arguments(task, () if args is None else args, {} if kwargs is None else kwargs)
    values["args"], values["kwargs"] = list(args or ()), dict(kwargs or {})
    try:
        periodic = PeriodicTask(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "definition"
        where = {"time_zone": "tz", "concurrency_policy": "concurrency_policy"}.get(where, where)
        raise ValueError(f"{where}: {first['msg']}") from None
    if periodic.jitter >= ttl_seconds(periodic):
        # Every run would be delayed past the time it may start, and expire unrun.
        raise ValueError(
            f"jitter: {periodic.jitter:g} s is not shorter than the time a run may wait to "
            f"start ({ttl_seconds(periodic)} s: expires, else one interval)"
        )
    return periodic


# Pure: the messages -------------------------------------------------------------------------


def pattern(p: PeriodicTask) -> str:
    """The ``Nats-Schedule`` value of ``p``."""
    if p.cron is not None:
        return cron.nats_pattern(p.cron)
    assert p.every is not None  # PeriodicTask holds exactly one of them
    return cron.every_pattern(p.every)


def interval_seconds(p: PeriodicTask) -> int:
    """One interval of ``p`` in whole seconds: ``every``, or a cron's shortest gap."""
    if p.every is not None:
        return p.every
    slot = cron.next_fire(p.cron, None, p.time_zone, _INTERVAL_FROM)
    shortest: float | None = None
    for _ in range(_INTERVAL_SAMPLES - 1):
        following = cron.next_fire(p.cron, None, p.time_zone, slot)
        gap = (following - slot).total_seconds()
        shortest = gap if shortest is None else min(shortest, gap)
        slot = following
    return max(1, math.ceil(shortest or 1))


def ttl_seconds(p: PeriodicTask) -> int:
    """How long a fire (and a run) may wait to start: ``expires``, else one interval."""
    if p.expires is not None:
        return max(1, math.ceil(p.expires))
    return interval_seconds(p)


def run_window(p: PeriodicTask, slot: datetime) -> timedelta:
    """How long after ``slot`` its run may start: ``expires``, else until the next slot."""
    if p.expires is not None:
        return timedelta(seconds=p.expires)
    if p.every is not None:
        return timedelta(seconds=p.every)
    return cron.next_fire(p.cron, None, p.time_zone, slot) - slot


def schedule_signature(p: PeriodicTask, keys: SigningKeys) -> str:
    """The ``Celeriac-Signature`` of ``p``'s schedule message, signed under
    ``periodic.<name>``: the server copies it onto each fire, which then verifies."""
    return keys.sign(p.queue, periodic_id(p.name), p.dumps())


def _signed(headers: dict[str, str], signature: str | None) -> dict[str, str]:
    if signature is not None:
        headers[HDR_SIGNATURE] = signature
    return headers


def schedule_message(
    p: PeriodicTask, signature: str | None = None
) -> tuple[str, dict[str, str], bytes]:
    """The subject, headers and body of ``p``'s schedule message (with ``signature``,
    from ``schedule_signature``, when the publisher signs).

    No ``Nats-Msg-Id``: the server would silently drop a changed definition published
    under the same id inside the duplicate window.
    """
    headers = {
        names.HDR_SCHEDULE: pattern(p),
        names.HDR_SCHEDULE_TARGET: names.task_subject(p.queue),
    }
    if p.cron is not None:
        headers[HDR_SCHEDULE_TIME_ZONE] = p.time_zone
    headers[HDR_SCHEDULE_TTL] = f"{ttl_seconds(p)}s"
    headers[HDR_TTL] = KEEP_FOREVER
    headers[HDR_PERIODIC] = p.name
    return p.subject, _signed(headers, signature), p.dumps()


def suspended_message(
    p: PeriodicTask, signature: str | None = None
) -> tuple[str, dict[str, str], bytes]:
    """The plain message that keeps ``p`` while it is suspended: no ``Nats-Schedule``.
    It keeps the signature too, for the schedule message that resumes it."""
    headers = {HDR_TTL: KEEP_FOREVER, HDR_PERIODIC: p.name, HDR_SUSPENDED: "1"}
    return p.subject, _signed(headers, signature), p.dumps()


def is_suspended(headers: dict[str, str] | None) -> bool:
    """True for a stored message that holds a definition but no active schedule."""
    headers = headers or {}
    return headers.get(HDR_SUSPENDED) == "1" or names.HDR_SCHEDULE not in headers


# Pure: catching up a missed slot ------------------------------------------------------------

# A slot's fire is expected to be handled within this time; only then does a slot
# without a recorded run count as missed (a late fire and its catch-up are one run anyway).
CATCH_UP_GRACE = timedelta(seconds=10)


def latest_slot(p: PeriodicTask, at: datetime, anchor: datetime | None) -> datetime | None:
    """The latest slot of ``p`` at or before ``at``. An ``every`` schedule has no fixed
    phase: its slots count from ``anchor`` (a known slot), and without one there is none."""
    if p.every is None:
        return cron.slot_of(
            p.cron, None, p.time_zone, cron.next_fire(p.cron, None, p.time_zone, at)
        )
    if anchor is None:
        return None
    anchor = _utc(anchor)
    steps = math.floor((_utc(at) - anchor).total_seconds() / p.every)
    return anchor + timedelta(seconds=steps * p.every) if steps >= 0 else None


def missed_slot(
    p: PeriodicTask,
    state: ScheduleState | None,
    stored_at: datetime | None,
    now: datetime,
    grace: timedelta = CATCH_UP_GRACE,
) -> datetime | None:
    """The slot to catch up, if any: the latest slot that should have been handled by
    ``now`` (``grace`` ago) but has no run recorded, while its run may still start.

    Only the latest: after downtime the missed slots collapse into one run. Slots
    from before the schedule was stored (``stored_at``) were never the server's.
    """
    # A time without a zone is UTC, as the workers read it.
    last = _utc(state.last_slot) if state is not None and state.last_slot else None
    stored_at = _utc(stored_at) if stored_at is not None else None
    now = _utc(now)
    slot = latest_slot(p, now - grace, last)
    if slot is None or (last is not None and slot <= last):
        return None
    if stored_at is not None and slot < stored_at:
        return None
    if now >= slot + run_window(p, slot):
        return None
    return slot


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def catch_up_message(
    p: PeriodicTask, slot: datetime, signature: str | None = None
) -> tuple[str, dict[str, str], bytes]:
    """The subject, headers and body of a catch-up fire of ``p`` for ``slot``.

    It reaches the workers as a fire does, so its run is the slot's one run, whichever
    of the two comes first. Its message id makes a second request for the slot a no-op.
    It carries the stored schedule's ``signature``: the same body, under the same
    ``periodic.<name>``, so it verifies as the regular fires do.
    """
    at = slot.astimezone(UTC).isoformat().replace("+00:00", "Z")
    headers = {
        HDR_PERIODIC: p.name,
        HDR_CATCH_UP: at,
        "Nats-Msg-Id": f"catch-up.{run_id(p.name, slot)}",
    }
    return names.task_subject(p.queue), _signed(headers, signature), p.dumps()
