"""The TaskQueue/WorkerPool/TaskSchedule models: durations, validation, and the JetStream
settings."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from celeriac.protocol import jetstream
from celeriac.protocol.kubeschema import format_duration, parse_duration
from celeriac.protocol.resources import TaskQueueSpec, TaskScheduleSpec, WorkerPoolSpec


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("7d", 604800), ("0s", 0),
     ("1.5h", 5400)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "5 m", "1w", "-1s", "s", "1h 2m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0, 0.5, 30, 90, 300, 3600, 86400, 7 * 86400])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_defaults_match_the_laptop_defaults() -> None:
    assert TaskQueueSpec().to_queue_settings() == jetstream.QueueSettings()


def test_spec_maps_to_queue_settings() -> None:
    spec = TaskQueueSpec.model_validate(
        {
            "maxAge": "1d",
            "maxMessages": 1000,
            "maxBytes": 1 << 20,
            "replicas": 3,
            "duplicateWindow": "5m",
            "delivery": {
                "ackWait": "1m",
                "maxDeliveries": 5,
                "maxAckPending": 50,
                "retryBackoff": ["1s", "10s"],
            },
            "deadLetter": {"maxAge": "90d"},
        }
    )
    settings = spec.to_queue_settings()
    assert settings == jetstream.QueueSettings(
        max_age_seconds=86400,
        max_messages=1000,
        max_bytes=1 << 20,
        replicas=3,
        duplicate_window_seconds=300,
        ack_wait_seconds=60,
        max_deliveries=5,
        max_ack_pending=50,
        backoff_seconds=(1.0, 10.0),
        dead_letter_max_age_seconds=90 * 86400,
    )
    consumer = jetstream.consumer_config("q", settings)
    assert consumer["backoff"] == [1.0, 10.0]
    assert "backoff" not in jetstream.consumer_config("q", jetstream.QueueSettings())


def test_queue_name_defaults_to_the_resource_name() -> None:
    assert TaskQueueSpec().queue_name("emails") == "emails"
    assert TaskQueueSpec(queue="bulk").queue_name("emails") == "bulk"
    with pytest.raises(ValueError, match="invalid queue name"):
        TaskQueueSpec().queue_name("Emails.v2")


POOL = {"queues": ["q"], "app": "m", "image": "i"}

# Python validation mirrors the CRD's, so bad specs fail the same way everywhere.
INVALID: list[tuple[type[Any], dict[str, Any], str]] = [
    (TaskQueueSpec, {"queue": "Bad.Name"}, "queue"),
    (TaskQueueSpec, {"maxAge": "7 days"}, "maxAge"),
    (TaskQueueSpec, {"replicas": 0}, "replicas"),
    (TaskQueueSpec, {"duplicateWindow": "0s"}, "duplicateWindow"),
    (TaskQueueSpec, {"delivery": {"ackWait": "0s"}}, "ackWait must be at least 1s"),
    (TaskQueueSpec, {"delivery": {"ackWait": "50ms"}}, "ackWait must be at least 1s"),
    (TaskQueueSpec, {"delivery": {"ackWait": "0.0000000001s"}}, "ackWait must be at least 1s"),
    (TaskQueueSpec, {"maxAge": "1h", "duplicateWindow": "2h"},
     r"duplicateWindow \(2h\) must not be longer than maxAge \(1h\)"),
    (TaskQueueSpec, {"maxAge": "99999999d"}, "maxAge must be at most 36500d"),
    (TaskQueueSpec, {"delivery": {"retryBackoff": ["1s", "40000d"]}},
     r"delivery.retryBackoff\[1\] must be at most"),
    (TaskQueueSpec, {"delivery": {"maxDeliveries": 0}}, "maxDeliveries"),
    (TaskQueueSpec, {"delivery": {"maxDeliveries": 2, "retryBackoff": ["1s", "2s"]}},
     "maxDeliveries"),
    (TaskQueueSpec, {"deletionPolicy": "Purge"}, "deletionPolicy"),
    (WorkerPoolSpec, {**POOL, "queues": []}, "queues"),
    (WorkerPoolSpec, {**POOL, "resources": {"limits": {"cpu": "lots"}}}, "cpu: 'lots'"),
    (WorkerPoolSpec, {**POOL, "resources": {"requests": {"memory": "-512Mi"}}}, "memory"),
    (WorkerPoolSpec, {**POOL, "resources": {"limits": {"cpu": -0.5}}}, "cpu: -0.5"),
    (WorkerPoolSpec, {**POOL, "resources": {"limits": {"cpu": True}}}, "resources.limits.cpu"),
    (WorkerPoolSpec, {**POOL, "resources": {"limits": {"cpu": float("inf")}}}, "cpu: inf"),
    (WorkerPoolSpec, {**POOL, "env": [{"name": "MODE=fast", "value": "x"}]}, "env.0.name"),
    (WorkerPoolSpec, {**POOL, "podLabels": {"team name": "x"}}, "'team name' is not a valid"),
    (WorkerPoolSpec, {**POOL, "podLabels": {"team": "not a value"}}, "not a valid label value"),
    (WorkerPoolSpec, {**POOL, "nodeSelector": {"a/b/c": "x"}}, "not a valid label key"),
    (WorkerPoolSpec, {**POOL, "podAnnotations": {"bad key": "x"}}, "not a valid annotation key"),
    (WorkerPoolSpec, {**POOL, "app": "not a module"}, "app"),
    (WorkerPoolSpec, {**POOL, "pool": "gevent"}, "pool"),
    (WorkerPoolSpec, {**POOL, "concurrency": 0}, "concurrency"),
    (WorkerPoolSpec, {**POOL, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
     "minReplicas"),
    (WorkerPoolSpec, {**POOL, "autoscaling": {"targetBacklogPerReplica": 5,
                                              "targetDrainTime": "1m"}}, "targetDrainTime"),
]  # fmt: skip


def test_pod_fields_valid_in_a_pod_are_accepted() -> None:
    WorkerPoolSpec.model_validate(
        {
            **POOL,
            "resources": {
                "requests": {"cpu": "0.5", "memory": "256Mi"},
                "limits": {"cpu": 2, "memory": 0.5e9},
            },
            "env": [{"name": "my.var-1", "value": "x"}],
            "podLabels": {"team.example.com/name": "payments", "tier": ""},
            "podAnnotations": {"example.com/owner": "any text at all"},
        }
    )


def test_valid_edges_are_accepted() -> None:
    TaskQueueSpec.model_validate({"delivery": {"ackWait": "1s"}})
    TaskQueueSpec.model_validate({"maxAge": "0s", "duplicateWindow": "2h"})  # 0s: no age limit
    TaskQueueSpec.model_validate({"maxAge": "36500d", "duplicateWindow": "2m"})


@pytest.mark.parametrize(("model", "data", "field"), INVALID)
def test_invalid_specs_name_the_field(model: type[Any], data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        model.model_validate(data)


def test_autoscaling_enabled() -> None:
    assert not WorkerPoolSpec.model_validate(POOL).autoscaling_enabled()
    assert WorkerPoolSpec.model_validate({**POOL, "autoscaling": {}}).autoscaling_enabled()
    off = {**POOL, "autoscaling": {"enabled": False}}
    assert not WorkerPoolSpec.model_validate(off).autoscaling_enabled()


TASK = {"name": "app.tasks.send_digest"}
EVERY_MINUTE = {"task": TASK, "cron": "* * * * *"}

# (spec, where pydantic reports the error, a fragment of its message)
SCHEDULE_INVALID: list[tuple[dict[str, Any], tuple[str, ...], str]] = [
    ({"task": TASK}, (), "set exactly one of cron and every"),
    ({**EVERY_MINUTE, "every": "5m"}, (), "set exactly one of cron and every"),
    ({"task": TASK, "every": "0s"}, (), "every must be at least 1s"),
    ({"task": TASK, "every": "0d0h"}, (), "every must be at least 1s"),
    ({"task": TASK, "every": "500ms"}, ("every",), "String should match pattern"),
    ({"task": TASK, "every": "1.5m"}, ("every",), "String should match pattern"),
    ({"task": TASK, "every": "5m", "timeZone": "Europe/Berlin"}, (),
     "timeZone applies to cron schedules only, not to every"),
    ({"task": TASK, "cron": "61 * * * *"}, ("cron",), "the minute field takes 0-59"),
    ({"task": TASK, "cron": "0 0 * * 7"}, ("cron",), "the day-of-week field takes 0-6"),
    ({"task": TASK, "cron": "@every 5s"}, ("cron",), "must be 5 fields"),
    ({**EVERY_MINUTE, "timeZone": "Local"}, (), "not Local"),
    ({**EVERY_MINUTE, "timeZone": ""}, ("timeZone",), "at least 1 character"),
    ({**EVERY_MINUTE, "concurrencyPolicy": "Skip"}, ("concurrencyPolicy",),
     "'Allow', 'Forbid' or 'Replace'"),
    ({**EVERY_MINUTE, "startingDeadline": "ten minutes"}, ("startingDeadline",),
     "String should match pattern"),
    ({**EVERY_MINUTE, "jitter": "-1s"}, ("jitter",), "String should match pattern"),
    ({"cron": "* * * * *"}, ("task",), "Field required"),
    ({**EVERY_MINUTE, "task": {"name": "send\x07digest"}}, ("task", "name"),
     "no control characters"),
    ({**EVERY_MINUTE, "task": {"name": ""}}, ("task", "name"), "at least 1 character"),
    ({**EVERY_MINUTE, "task": {**TASK, "queue": "Bad Queue"}}, ("task", "queue"),
     "String should match pattern"),
    ({**EVERY_MINUTE, "task": {**TASK, "args": "not a list"}}, ("task", "args"),
     "valid list"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "loc", "fragment"), SCHEDULE_INVALID)
def test_invalid_schedules_name_the_field(
    data: dict[str, Any], loc: tuple[str, ...], fragment: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        TaskScheduleSpec.model_validate(data)
    errors = caught.value.errors()
    assert len(errors) == 1, errors
    assert errors[0]["loc"] == loc
    assert fragment in errors[0]["msg"]


def test_schedule_valid_edges_are_accepted() -> None:
    every = TaskScheduleSpec.model_validate({"task": TASK, "every": "1s"})
    assert (every.every, every.cron, every.time_zone) == ("1s", None, "UTC")
    assert every.task.queue == "default"
    assert every.concurrency_policy == "Allow"
    assert TaskScheduleSpec.model_validate({"task": TASK, "every": "1d1h1m1s"}).every
    # The model keeps the cron as written; the operator turns it into the server's form.
    assert TaskScheduleSpec.model_validate({"task": TASK, "cron": "@DAILY"}).cron == "@DAILY"
    six = TaskScheduleSpec.model_validate({"task": TASK, "cron": "*/5 0 9 * * MON-FRI"})
    assert six.cron == "*/5 0 9 * * MON-FRI"
    zoned = TaskScheduleSpec.model_validate({**EVERY_MINUTE, "timeZone": "Europe/Berlin"})
    assert zoned.time_zone == "Europe/Berlin"
    args: list[Any] = [1, "two", 3.5, None, True, [1, [2]], {"k": ["v", None]}]
    kwargs: dict[str, Any] = {"nested": {"a": [1, {"b": {"c": None}}], "d": False}, "n": 0}
    spec = TaskScheduleSpec.model_validate(
        {
            "task": {**TASK, "args": args, "kwargs": kwargs, "queue": "emails",
                     "headers": {"tenant": "acme"}},
            "cron": "0 2 * * *",
            "startingDeadline": "10m",
            "jitter": "30s",
            "concurrencyPolicy": "Forbid",
            "suspend": True,
        }
    )  # fmt: skip
    assert (spec.task.args, spec.task.kwargs) == (args, kwargs)
    assert (spec.task.queue, spec.task.headers) == ("emails", {"tenant": "acme"})
    assert (spec.starting_deadline, spec.jitter, spec.suspend) == ("10m", "30s", True)
