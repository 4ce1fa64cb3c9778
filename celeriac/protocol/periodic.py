"""Periodic tasks on the wire: a schedule the server holds and fires, one run per slot.

A periodic task is one message in its queue's work stream, on its own subject
``celeriac.schedules.<queue>.periodic.<name>``, with ``Nats-Schedule`` (a 6-field
cron or ``@every``), ``Nats-Schedule-Target: celeriac.tasks.<queue>`` and, for a
cron, ``Nats-Schedule-Time-Zone``. Its body is a ``PeriodicTask``. The server (the
stream's leader) fires it: each fire is a copy of the body and of the custom
headers on the task subject, with ``Nats-Scheduler`` and ``Nats-Schedule-Next``
added. No process of Celeriac's has to be up for the schedule to fire.

A worker taking a fire does not run it: it works out the slot the fire stands for
from ``Nats-Schedule-Next`` and enqueues an ordinary task whose id is ``run_id(name,
slot)``, so a second fire of one slot (after a leader change) is deduplicated and a
person can find the run of a given time by its id.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from celeriac.protocol import names
from celeriac.protocol.envelope import MAX_SECONDS, _rfc3339, _Strict, check_task_name

# A schedule's name: a DNS label, optionally prefixed by another (``namespace.name``
# for TaskSchedule resources). It becomes part of a subject and of task ids.
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
SCHEDULE_NAME_PATTERN = rf"^{_LABEL}(\.{_LABEL})?$"
_SCHEDULE_NAME = re.compile(SCHEDULE_NAME_PATTERN)

HDR_PERIODIC = "Celeriac-Periodic"  # on schedule messages and copied onto their fires
HDR_SCHEDULER = "Nats-Scheduler"  # added by the server: the schedule's subject
HDR_SCHEDULE_NEXT = "Nats-Schedule-Next"  # added by the server: the next planned fire
HDR_SCHEDULE_TIME_ZONE = "Nats-Schedule-Time-Zone"
HDR_SCHEDULE_TTL = "Nats-Schedule-TTL"
# On a catch-up fire (published by the operator or a worker for a slot the server
# missed): the slot it stands for, as RFC 3339. It takes the place of Nats-Schedule-Next.
HDR_CATCH_UP = "Celeriac-Catch-Up"

MIN_EVERY = 1  # seconds: the server's scheduler has whole-second resolution
MAX_EVERY = 366 * 86_400


class ConcurrencyPolicy(StrEnum):
    """What a fire does while the previous run of the same schedule is unfinished."""

    ALLOW = "Allow"  # run anyway
    FORBID = "Forbid"  # skip this slot
    REPLACE = "Replace"  # revoke the unfinished run, then run


def managed_by(name: str) -> str | None:
    """The TaskSchedule (``namespace/name``) that owns schedule ``name``, if any: the
    operator names its schedules ``<namespace>.<name>``; apps may not use a '.'."""
    namespace, dot, resource = name.partition(".")
    return f"{namespace}/{resource}" if dot else None


def check_schedule_name(name: str) -> str:
    """``name`` if it can name a schedule, else ``ValueError`` saying what fits."""
    if not _SCHEDULE_NAME.match(name):
        raise ValueError(
            f"invalid schedule name {name[:80]!r}: use lower-case letters, digits and '-' "
            "(at most 63), optionally as 'prefix.name'"
        )
    return name


def schedule_subject(queue: str, name: str) -> str:
    """The subject holding schedule ``name`` of ``queue``."""
    return (
        f"celeriac.schedules.{names.check_queue_name(queue)}.periodic.{check_schedule_name(name)}"
    )


def run_id(name: str, slot: datetime) -> str:
    """The task id of the run of schedule ``name`` for ``slot`` (a UTC instant), e.g.
    ``nightly-report.20261203T020000Z``."""
    return f"{name}.{slot.astimezone(UTC):%Y%m%dT%H%M%SZ}"


class PeriodicTask(_Strict):
    """A schedule's definition: the body of its schedule message and of every fire.

    Exactly one of ``cron`` (as the server takes it: 6 fields, seconds first, or a
    macro such as ``@daily``) and ``every`` (seconds) is set. ``expires`` is how
    long after its slot a run may still start (default: one interval, so runs
    missed while nothing consumed the queue never pile up); ``jitter`` delays each
    run by up to that many seconds.
    """

    v: Literal[1] = 1
    name: str
    task: str
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    queue: str
    cron: str | None = Field(default=None, min_length=1, max_length=256)
    every: int | None = Field(default=None, ge=MIN_EVERY, le=MAX_EVERY)
    time_zone: str = Field(default="UTC", min_length=1, max_length=64)
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    expires: float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    jitter: float = Field(default=0.0, ge=0, le=MAX_SECONDS)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_schedule_name(v)

    @field_validator("task")
    @classmethod
    def _task(cls, v: str) -> str:
        return check_task_name(v)

    @field_validator("queue")
    @classmethod
    def _queue(cls, v: str) -> str:
        return names.check_queue_name(v)

    @model_validator(mode="after")
    def _one_timing(self) -> PeriodicTask:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of cron and every")
        if self.every is not None and self.time_zone != "UTC":
            raise ValueError("timeZone applies to cron schedules only, not to every")
        return self

    @property
    def subject(self) -> str:
        """The subject of this schedule's message."""
        return schedule_subject(self.queue, self.name)


class ScheduleState(_Strict):
    """What the workers record of a schedule, in the ``celeriac_schedules`` bucket under
    the schedule's name: its last slot and run, and how many runs and skips."""

    last_slot: datetime | None = None
    last_run: str | None = None  # the id of the last run enqueued
    runs: int = Field(default=0, ge=0)
    skips: int = Field(default=0, ge=0)  # slots skipped by concurrencyPolicy Forbid
    last_skip_reason: str | None = None

    @field_validator("last_slot", mode="before")
    @classmethod
    def _time(cls, v: Any) -> Any:
        return _rfc3339(v)
