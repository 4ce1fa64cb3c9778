"""A TaskSchedule turned into the schedule nats-server holds, and its status (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from celeriac.exceptions import CeleriacError, NatsRefusedError, ScheduleNotSupported
from celeriac.operator.taskschedules import (
    QueueMissingError,
    _signing_keys,
    _trouble,
    definition,
    schedule_name,
    schedule_status,
)
from celeriac.periodic import define
from celeriac.protocol.periodic import ConcurrencyPolicy, PeriodicTask, ScheduleState
from celeriac.protocol.states import TaskState
from celeriac.schedulestore import ScheduleInfo

TASK = {"name": "app.tasks.send_digest"}


def resource(spec: dict[str, Any] | None, namespace: str = "team", name: str = "digest") -> Any:
    return {"metadata": {"namespace": namespace, "name": name}, "spec": spec}


def test_schedule_name() -> None:
    assert schedule_name("team", "digest") == "team.digest"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"task": TASK, "cron": "30 2 * * *"},
            {"cron": "0 30 2 * * *", "every": None, "time_zone": "UTC", "queue": "default",
             "expires": None, "jitter": 0.0, "concurrency_policy": ConcurrencyPolicy.ALLOW},
        ),
        (
            {"task": TASK, "cron": "@DAILY", "timeZone": "Europe/Berlin",
             "startingDeadline": "10m", "jitter": "30s", "concurrencyPolicy": "Forbid"},
            {"cron": "@daily", "time_zone": "Europe/Berlin", "expires": 600.0, "jitter": 30.0,
             "concurrency_policy": ConcurrencyPolicy.FORBID},
        ),
        (
            {"task": TASK, "cron": "*/5 0 9 * * mon-fri", "startingDeadline": "1.5s"},
            {"cron": "*/5 0 9 * * mon-fri", "expires": 1.5},
        ),
        (
            {"task": {**TASK, "queue": "emails", "args": [1, "two", None, [3.5]],
                      "kwargs": {"to": {"list": ["a", "b"], "cc": None}},
                      "headers": {"tenant": "acme"}},
             "every": "1h30m", "concurrencyPolicy": "Replace"},
            {"cron": None, "every": 5400, "queue": "emails", "args": [1, "two", None, [3.5]],
             "kwargs": {"to": {"list": ["a", "b"], "cc": None}}, "headers": {"tenant": "acme"},
             "concurrency_policy": ConcurrencyPolicy.REPLACE},
        ),
        ({"task": TASK, "every": "366d"}, {"every": 366 * 86400}),
        ({"task": TASK, "every": "1s"}, {"every": 1}),
        ({"task": TASK, "every": "1m", "jitter": "59s"}, {"every": 60, "jitter": 59.0}),
    ],
)  # fmt: skip
def test_definition_of_a_valid_body(spec: dict[str, Any], expected: dict[str, Any]) -> None:
    parsed, p = definition(resource(spec))
    assert parsed.task.name == TASK["name"]
    assert p.name == "team.digest"
    assert p.task == "app.tasks.send_digest"
    assert {key: getattr(p, key) for key in expected} == expected


def test_definition_is_what_the_sdk_defines() -> None:
    """The operator writes what ``celeriac schedule sync`` would for the same schedule."""
    spec = {
        "task": {**TASK, "queue": "emails", "args": [1], "kwargs": {"k": "v"}},
        "cron": "0 9 * * MON-FRI",
        "timeZone": "Europe/Berlin",
        "startingDeadline": "1h",
        "jitter": "1m",
    }
    _, p = definition(resource(spec, "prod", "weekday-digest"))
    assert p == define(
        name="prod.weekday-digest",
        task="app.tasks.send_digest",
        queue="emails",
        cron_text="0 9 * * MON-FRI",
        tz="Europe/Berlin",
        args=[1],
        kwargs={"k": "v"},
        expires=3600,
        jitter=60,
    )
    assert PeriodicTask.model_validate_json(p.dumps()) == p


@pytest.mark.parametrize(
    ("spec", "meta", "message"),
    [
        # What the model refuses, named by its field.
        ({"task": TASK}, {}, "spec: set exactly one of cron and every"),
        ({"task": TASK, "cron": "61 * * * *"}, {}, "spec.cron: the minute field takes 0-59"),
        ({"task": TASK, "every": "500ms"}, {}, "spec.every: String should match pattern"),
        ({"cron": "* * * * *"}, {}, "spec.task: Field required"),
        (None, {}, "spec.task: Field required"),
        ({"task": {**TASK, "queue": "Bad Queue"}, "cron": "* * * * *"}, {},
         "spec.task.queue: String should match pattern"),
        ({"task": TASK, "cron": "* * * * *", "timeZone": "Local"}, {},
         "spec: use an IANA time zone name"),
        # What only the whole definition refuses.
        ({"task": TASK, "every": "1m", "jitter": "1m"}, {},
         "spec.jitter: 60 s is not shorter than the time a run may wait to start (60 s"),
        ({"task": TASK, "every": "1h", "startingDeadline": "10s", "jitter": "10s"}, {},
         "spec.jitter: 10 s is not shorter than the time a run may wait to start (10 s"),
        ({"task": TASK, "cron": "*/5 * * * * *", "jitter": "5s"}, {},
         "spec.jitter: 5 s is not shorter"),
        ({"task": TASK, "cron": "5-2 * * * *"}, {}, "spec.cron: bad minute field '5-2'"),
        ({"task": TASK, "cron": "0 0 0 30 2 *"}, {}, "spec.cron: bad day-of-month field '30'"),
        ({"task": TASK, "cron": "0 0 9 * * SAT-MON"}, {},
         "spec.cron: bad day-of-week field 'SAT-MON'"),
        ({"task": TASK, "every": "400d"}, {}, "spec.every: '400d' is longer than 366 days"),
        ({"task": TASK, "every": "366d1s"}, {}, "spec.every: '366d1s' is longer than 366 days"),
        ({"task": TASK, "cron": "* * * * *", "timeZone": "Mars/Base"}, {},
         "spec.timeZone: unknown time zone 'Mars/Base'"),
        ({"task": TASK, "cron": "* * * * *", "timeZone": "localtime"}, {},
         "spec.timeZone: 'localtime' is the server host's zone"),
        ({"task": TASK, "cron": "* * * * *", "startingDeadline": "0s"}, {},
         "spec.startingDeadline: Input should be greater than 0"),
        ({"task": TASK, "cron": "* * * * *"}, {"namespace": "Team"},
         "metadata.name: invalid schedule name 'Team.digest'"),
        ({"task": TASK, "cron": "* * * * *"}, {"name": "a.b"},
         "metadata.name: invalid schedule name 'team.a.b'"),
    ],
)  # fmt: skip
def test_an_invalid_body_names_the_field(
    spec: dict[str, Any] | None, meta: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        definition(resource(spec, **meta))
    assert str(caught.value).startswith(message)


# Status -------------------------------------------------------------------------------------

P = define(name="team.digest", task="app.tasks.send_digest", queue="q", cron_text="0 * * * *")
SLOT = datetime(2026, 12, 2, 16, tzinfo=UTC)
NEXT = datetime(2026, 12, 2, 17, 0, 0, 250_000, tzinfo=UTC)
RUN = "team.digest.20261202T160000Z"


@pytest.mark.parametrize(
    ("info", "last", "expected"),
    [
        # Nothing recorded yet.
        (
            ScheduleInfo(P, False, NEXT, None, SLOT),
            None,
            {"lastScheduleTime": None, "lastRun": None, "nextScheduleTime": "2026-12-02T17:00:00Z",
             "runs": 0, "skips": 0, "lastSkipReason": None},
        ),
        # A run enqueued, nothing recorded of it yet: PENDING.
        (
            ScheduleInfo(P, False, NEXT, ScheduleState(last_slot=SLOT, last_run=RUN, runs=1)),
            None,
            {"lastScheduleTime": "2026-12-02T16:00:00Z",
             "lastRun": {"id": RUN, "state": "PENDING"},
             "nextScheduleTime": "2026-12-02T17:00:00Z", "runs": 1, "skips": 0,
             "lastSkipReason": None},
        ),
        (
            ScheduleInfo(P, False, NEXT, ScheduleState(last_slot=SLOT, last_run=RUN, runs=7)),
            TaskState.SUCCESS,
            {"lastScheduleTime": "2026-12-02T16:00:00Z",
             "lastRun": {"id": RUN, "state": "SUCCESS"},
             "nextScheduleTime": "2026-12-02T17:00:00Z", "runs": 7, "skips": 0,
             "lastSkipReason": None},
        ),
        # Skipped slots only: no run to report.
        (
            ScheduleInfo(P, False, NEXT,
                         ScheduleState(last_slot=SLOT, skips=2, last_skip_reason="busy")),
            None,
            {"lastScheduleTime": "2026-12-02T16:00:00Z", "lastRun": None,
             "nextScheduleTime": "2026-12-02T17:00:00Z", "runs": 0, "skips": 2,
             "lastSkipReason": "busy"},
        ),
        # Suspended: no next fire.
        (
            ScheduleInfo(P, True, None,
                         ScheduleState(last_slot=SLOT, last_run=RUN, runs=3, skips=1,
                                       last_skip_reason="busy")),
            TaskState.FAILURE,
            {"lastScheduleTime": "2026-12-02T16:00:00Z",
             "lastRun": {"id": RUN, "state": "FAILURE"}, "nextScheduleTime": None,
             "runs": 3, "skips": 1, "lastSkipReason": "busy"},
        ),
    ],
)  # fmt: skip
def test_schedule_status(
    info: ScheduleInfo, last: TaskState | None, expected: dict[str, Any]
) -> None:
    assert schedule_status(info, last) == expected


def test_status_times_are_utc_whole_seconds() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    state = ScheduleState(last_slot=datetime(2026, 12, 2, 17, 0, 0, 999_999, tzinfo=berlin))
    fields = schedule_status(
        ScheduleInfo(P, False, datetime(2026, 12, 2, 18, tzinfo=berlin), state), None
    )
    assert fields["lastScheduleTime"] == "2026-12-02T16:00:00Z"
    assert fields["nextScheduleTime"] == "2026-12-02T17:00:00Z"


class _Connections:
    def connected(self, url: str | None = None) -> bool:
        return True


class _Memo:
    nats = _Connections()


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (QueueMissingError("queue q has no stream"), "QueueMissing"),
        (ScheduleNotSupported("stream does not allow message schedules"), "ScheduleRefused"),
        (NatsRefusedError("NATS refused the operator: authorization violation"), "NatsRefused"),
        (TimeoutError(), "JetStreamNotAnswering"),
        (OSError("connection refused"), "NatsUnavailable"),
    ],
)
def test_trouble_names_what_went_wrong(exc: Exception, reason: str) -> None:
    spec, _ = definition(resource({"task": TASK, "every": "1m"}))
    assert _trouble(exc, _Memo(), spec)[0] == reason


def test_the_operator_signs_schedules_with_its_environment_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CELERIAC_SIGNING_KEYS_FILE", raising=False)
    monkeypatch.delenv("CELERIAC_SIGNING_KEYS", raising=False)
    assert _signing_keys() is None
    monkeypatch.setenv("CELERIAC_SIGNING_KEYS", "k1:" + "QUFB" * 11)
    keys = _signing_keys()
    assert keys is not None and keys.key_ids == ("k1",)
    monkeypatch.setenv("CELERIAC_SIGNING_KEYS", "k1:QUFB")
    with pytest.raises(CeleriacError, match=r"the operator's signing keys: \$CELERIAC_SIGNING"):
        _signing_keys()
