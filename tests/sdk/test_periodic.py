"""Periodic tasks: definitions and schedule messages (unit), and the schedules on a real
nats-server (sync, prune, suspend, resume, delete, list, trigger, fires, the CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from celeriac_devenv.processes import free_port
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, StreamConfig
from nats.js.errors import NotFoundError

from celeriac.app import Celeriac
from celeriac.periodic import define, schedule_message, schedule_name_for
from celeriac.protocol import jetstream, names
from celeriac.protocol.envelope import TaskMessage
from celeriac.protocol.periodic import ConcurrencyPolicy, PeriodicTask, schedule_subject
from celeriac.schedules import trigger
from celeriac.schedulestore import (
    AmbiguousScheduleError,
    Change,
    ScheduleNotFoundError,
    delete_schedule,
    find_schedule,
    list_schedules,
    resume_schedule,
    store,
    suspend_schedule,
)
from tests.sdk.conftest import unique_queue
from tests.support import await_until

REPO = Path(__file__).resolve().parents[2]


def offline_app(queue: str = "default") -> Celeriac:
    """An app that never connects: definitions only."""
    return Celeriac("periodic-unit", "nats://127.0.0.1:1", default_queue=queue)


# Schedule messages -------------------------------------------------------------------------


def test_schedule_message_of_a_cron_with_a_time_zone() -> None:
    app = offline_app("reports")

    @app.periodic_task("30 2 * * *", tz="Europe/Berlin", name="nightly", args=(7,))
    def report(day: int) -> None: ...

    p = app.periodic_tasks["nightly"]
    subject, headers, payload = schedule_message(p)
    assert subject == "celeriac.schedules.reports.periodic.nightly"
    assert headers == {
        "Nats-Schedule": "0 30 2 * * *",
        "Nats-Schedule-Target": "celeriac.tasks.reports",
        "Nats-Schedule-Time-Zone": "Europe/Berlin",
        "Nats-Schedule-TTL": "86400s",
        "Nats-TTL": "never",
        "Celeriac-Periodic": "nightly",
    }
    assert "Nats-Msg-Id" not in headers
    body = PeriodicTask.model_validate_json(payload)
    assert body == p
    assert (body.task, body.args, body.queue, body.cron) == (
        f"{__name__}.test_schedule_message_of_a_cron_with_a_time_zone.<locals>.report",
        [7],
        "reports",
        "0 30 2 * * *",
    )


def test_schedule_message_of_an_interval() -> None:
    app = offline_app()
    app.add_periodic_task(90, app.signature("t.tick", (1,), {"a": 2}), name="tick")
    subject, headers, payload = schedule_message(app.periodic_tasks["tick"])
    assert subject == "celeriac.schedules.default.periodic.tick"
    assert headers == {
        "Nats-Schedule": "@every 90s",
        "Nats-Schedule-Target": "celeriac.tasks.default",
        "Nats-Schedule-TTL": "90s",
        "Nats-TTL": "never",
        "Celeriac-Periodic": "tick",
    }
    body = json.loads(payload)
    assert (body["every"], body["args"], body["kwargs"]) == (90, [1], {"a": 2})
    assert "cron" not in body


@pytest.mark.parametrize(
    ("cron", "pattern", "ttl"),
    [
        ("@daily", "@daily", "86400s"),
        ("@Hourly", "@hourly", "3600s"),
        ("@weekly", "@weekly", "604800s"),
        ("*/15 * * * * *", "*/15 * * * * *", "15s"),
        ("0 9 * * MON-FRI", "0 0 9 * * MON-FRI", "86400s"),  # the shortest gap
    ],
)
def test_schedule_message_of_macros_and_crons(cron: str, pattern: str, ttl: str) -> None:
    app = offline_app()
    app.add_periodic_task(cron, app.signature("t.x"), name="m")
    _, headers, _ = schedule_message(app.periodic_tasks["m"])
    assert headers["Nats-Schedule"] == pattern
    assert headers["Nats-Schedule-Time-Zone"] == "UTC"  # always sent for a cron
    assert headers["Nats-Schedule-TTL"] == ttl


def test_expires_is_the_ttl_of_fires() -> None:
    app = offline_app()
    app.add_periodic_task("@hourly", app.signature("t.x"), name="a", expires=90.2)
    app.add_periodic_task(timedelta(minutes=5), app.signature("t.x"), name="b", expires=30)
    assert schedule_message(app.periodic_tasks["a"])[1]["Nats-Schedule-TTL"] == "91s"
    assert schedule_message(app.periodic_tasks["b"])[1]["Nats-Schedule-TTL"] == "30s"


# Definitions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "name"),
    [
        ("shop.tasks.cleanup_old", "shop-tasks-cleanup-old"),
        ("Reports.Nightly", "reports-nightly"),
        ("__main__.tick", "main---tick"),
        ("a" * 70, "a" * 63),
        ("x" * 62 + ".y", "x" * 62),  # trimmed to 63, then no '-' at the end
    ],
)
def test_default_schedule_name(task: str, name: str) -> None:
    assert schedule_name_for(task) == name


def test_periodic_task_registers_a_task_and_a_schedule() -> None:
    app = offline_app("q1")

    @app.periodic_task(
        every=timedelta(minutes=5),
        task_name="shop.Cleanup",
        kwargs={"days": 30},
        concurrency_policy="forbid",
        expires=60,
        jitter=5,
        max_retries=1,
    )
    def cleanup(days: int) -> int:
        return days

    assert app.tasks["shop.Cleanup"] is cleanup
    assert cleanup.max_retries == 1
    assert cleanup(3) == 3  # still a plain call here
    p = app.periodic_tasks["shop-cleanup"]
    assert (p.task, p.every, p.kwargs, p.queue) == ("shop.Cleanup", 300, {"days": 30}, "q1")
    assert p.concurrency_policy is ConcurrencyPolicy.FORBID
    assert (p.expires, p.jitter) == (60, 5)


def test_periodic_task_queue_is_the_tasks_queue() -> None:
    app = offline_app()

    @app.periodic_task(every="1h", queue="emails")
    def digest() -> None: ...

    assert digest.queue == "emails"
    assert next(iter(app.periodic_tasks.values())).queue == "emails"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, r"give exactly one of cron and every, not neither"),
        ({"cron": "@daily", "every": 60}, r"give exactly one of cron and every, not both"),
        ({"cron": "61 * * * *"}, r"^cron: bad minute field '61'"),
        ({"cron": "* * *"}, r"^cron: expected 5 or 6 fields"),
        ({"cron": "@reboot"}, r"^cron: unknown macro"),
        ({"cron": 5}, r"^cron: expected a cron string"),
        ({"every": 0.5}, r"^every: must be at least 1 s"),
        ({"every": 1.5}, r"^every: must be whole seconds"),
        ({"every": "1.5s"}, r"^every: '1.5s' is not a whole number of seconds"),
        ({"every": "banana"}, r"^every: bad interval"),
        ({"every": timedelta(days=400)}, r"^every: .*366 days"),
        ({"cron": "@daily", "tz": "Mars/Olympus"}, r"^tz: unknown time zone 'Mars/Olympus'"),
        ({"cron": "@daily", "tz": "Local"}, r"^tz: 'Local' is the server host's zone"),
        ({"every": 60, "tz": "Europe/Berlin"}, r"^tz: applies to cron schedules only"),
        ({"every": 60, "name": "Nightly Report"}, r"^name: invalid schedule name"),
        ({"every": 60, "concurrency_policy": "Sometimes"}, r"^concurrency_policy: expected"),
        ({"every": 60, "expires": 0}, r"^expires: "),
        ({"every": 60, "jitter": -1}, r"^jitter: must be at least 0 s"),
        ({"every": 60, "jitter": 60}, r"^jitter: 60 s is not shorter than .* \(60 s"),
        ({"every": 60, "expires": 10, "jitter": 15}, r"^jitter: 15 s is not shorter .*\(10 s"),
        ({"every": 60, "queue": "Bad Queue"}, r"invalid queue name"),
        ({"every": 60, "name": "team.report"}, r"^name: 'team.report' has a '.', reserved"),
    ],
)
def test_periodic_task_refuses_at_definition(kwargs: dict[str, Any], match: str) -> None:
    app = offline_app()
    # Shared tasks of modules other tests imported belong to every app: compare with them.
    before = dict(app.tasks)
    with pytest.raises(ValueError, match=match):
        app.periodic_task(**kwargs)
    assert app.tasks == before
    assert app.periodic_tasks == {}


def test_periodic_task_refuses_arguments_json_cannot_carry() -> None:
    app = offline_app()
    with pytest.raises(TypeError, match=r"argument 0 of .* is not JSON-serializable"):
        app.periodic_task(every=60, args=(datetime.now(UTC),))


def test_a_schedule_name_is_defined_once() -> None:
    app = offline_app()
    app.add_periodic_task(60, app.signature("t.a"), name="dup")
    app.add_periodic_task(60, app.signature("t.a"), name="dup")  # the same again: fine
    with pytest.raises(ValueError, match=r"^name: schedule 'dup' is already defined"):
        app.add_periodic_task(60, app.signature("t.b"), name="dup")


def test_add_periodic_task_takes_celery_schedules() -> None:
    app = offline_app()

    @app.task(name="shop.add", queue="math")
    def add(a: int, b: int) -> int:
        return a + b

    app.add_periodic_task(10.0, add.s(1, 2), name="add-every-10")
    app.add_periodic_task(timedelta(hours=1), add.s(3, b=4), name="add-hourly")
    app.add_periodic_task("0 2 * * *", add.s(5, 6), tz="America/New_York")
    app.add_periodic_task("@every 1h30m", add.s(7, 8).set(queue="other"), name="add-90m")
    app.add_periodic_task("@daily", add, name="add-daily", expires=120)
    p = app.periodic_tasks
    assert (p["add-every-10"].every, p["add-every-10"].args) == (10, [1, 2])
    assert (p["add-hourly"].every, p["add-hourly"].kwargs) == (3600, {"b": 4})
    nightly = p["shop-add"]  # the default name comes from the task's name
    assert (nightly.cron, nightly.time_zone, nightly.queue) == (
        "0 0 2 * * *",
        "America/New_York",
        "math",
    )
    assert (p["add-90m"].every, p["add-90m"].queue) == (5400, "other")
    assert (p["add-daily"].cron, p["add-daily"].expires) == ("@daily", 120)


@pytest.mark.parametrize(
    ("schedule", "match"),
    [
        ("61 * * * *", r"^schedule: bad minute field"),
        (0.5, r"^schedule: must be at least 1 s"),
        (timedelta(milliseconds=1500), r"^schedule: must be whole seconds"),
        ("@every 500ms", r"^schedule: "),
        (None, r"^give exactly one of schedule and schedule"),
    ],
)
def test_add_periodic_task_refuses_a_bad_schedule(schedule: Any, match: str) -> None:
    app = offline_app()
    with pytest.raises(ValueError, match=match):
        app.add_periodic_task(schedule, app.signature("t.x"), name="x")


def test_add_periodic_task_refuses_delivery_options_of_one_call() -> None:
    app = offline_app()
    with pytest.raises(ValueError, match=r"^signature: option.*countdown"):
        app.add_periodic_task(60, app.signature("t.x").set(countdown=5), name="x")
    with pytest.raises(TypeError, match=r"^signature: expected a signature"):
        app.add_periodic_task(60, "t.x", name="x")  # type: ignore[arg-type]


# On a real nats-server ---------------------------------------------------------------------


@pytest.fixture
async def cleanup(raw_nc: Client, queue: str) -> AsyncIterator[list[str]]:
    """Queues whose periodic schedules are purged after the test (the test's own first)."""
    queues = [queue]
    yield queues
    js = raw_nc.jetstream()
    for q in queues:
        with contextlib.suppress(NotFoundError):
            await js.purge_stream(
                names.stream_name(q), subject=f"celeriac.schedules.{q}.periodic.>"
            )


async def stored(nc: Client, queue: str, name: str) -> Any:
    """The message on a schedule's subject, read without the SDK (None if there is none)."""
    try:
        return await nc.jetstream().get_last_msg(
            names.stream_name(queue), schedule_subject(queue, name)
        )
    except NotFoundError:
        return None


async def on_subject(nc: Client, queue: str, name: str) -> int:
    info = await nc.jetstream().stream_info(
        names.stream_name(queue), subjects_filter=schedule_subject(queue, name)
    )
    return sum((info.state.subjects or {}).values())


def define_two(app: Celeriac) -> None:
    app.add_periodic_task("0 3 * * *", app.signature("t.nightly", (1,)), name="nightly",
                          tz="Europe/Berlin")  # fmt: skip
    app.add_periodic_task(3600, app.signature("t.hourly"), name="hourly")


@pytest.mark.integration
async def test_sync_publishes_the_schedules_once(
    aapp: Celeriac, queue: str, raw_nc: Client, cleanup: list[str]
) -> None:
    define_two(aapp)
    report = await aapp.async_sync_schedules()
    assert sorted((r.name, r.change) for r in report.results) == [
        ("hourly", Change.CREATED),
        ("nightly", Change.CREATED),
    ]
    first = {}
    for name in ("nightly", "hourly"):
        msg = await stored(raw_nc, queue, name)
        subject, headers, payload = schedule_message(aapp.periodic_tasks[name])
        assert msg.subject == subject
        assert msg.data == payload
        assert msg.headers == {**headers, "Nats-Rollup": "sub"}  # the server adds the rollup
        first[name] = (msg.seq, msg.headers)

    again = await aapp.async_sync_schedules()
    assert {r.change for r in again.results} == {Change.UNCHANGED}
    for name in ("nightly", "hourly"):
        msg = await stored(raw_nc, queue, name)
        assert (msg.seq, msg.headers) == first[name]  # not even written again


@pytest.mark.integration
async def test_sync_replaces_a_changed_definition(
    nats_url: str, queue: str, raw_nc: Client, cleanup: list[str]
) -> None:
    app = Celeriac("v1", nats_url, default_queue=queue)
    app.add_periodic_task("0 3 * * *", app.signature("t.x"), name="job")
    await app.async_sync_schedules()
    await app.aclose()
    app = Celeriac("v2", nats_url, default_queue=queue)
    app.add_periodic_task("0 4 * * *", app.signature("t.x"), name="job")
    report = await app.async_sync_schedules()
    await app.aclose()
    assert [(r.name, r.change) for r in report.results] == [("job", Change.UPDATED)]
    msg = await stored(raw_nc, queue, "job")
    assert msg.headers["Nats-Schedule"] == "0 0 4 * * *"
    assert await on_subject(raw_nc, queue, "job") == 1  # the new one replaced the old


@pytest.mark.integration
async def test_prune_deletes_only_what_the_app_no_longer_defines(
    nats_url: str, queue: str, raw_nc: Client, cleanup: list[str]
) -> None:
    other = unique_queue()
    cleanup.append(other)
    old = Celeriac("old", nats_url, default_queue=queue)
    define_two(old)
    old.add_periodic_task(60, old.signature("t.x"), name="elsewhere", queue=other)
    await old.async_sync_schedules()
    # What the operator writes for TaskSchedule shop/digest on the same queue.
    managed = define(name="shop.digest", task="t.digest", queue=queue, every=60)
    await store((await old.broker()).js, managed)
    await old.aclose()

    new = Celeriac("new", nats_url, default_queue=queue)
    new.add_periodic_task(3600, new.signature("t.hourly"), name="hourly")
    kept = await new.async_sync_schedules()
    assert [r.change for r in kept.results] == [Change.UNCHANGED]
    assert await stored(raw_nc, queue, "nightly") is not None  # no prune, no delete

    pruned = await new.async_sync_schedules(prune=True)
    await new.aclose()
    assert sorted((r.name, r.change) for r in pruned.results) == [
        ("hourly", Change.UNCHANGED),
        ("nightly", Change.DELETED),
    ]
    assert await stored(raw_nc, queue, "nightly") is None
    assert await stored(raw_nc, queue, "hourly") is not None
    assert await stored(raw_nc, other, "elsewhere") is not None  # not a queue the app uses
    assert await stored(raw_nc, queue, "shop.digest") is not None  # a TaskSchedule's


@pytest.mark.integration
async def test_suspend_resume_delete_and_list(
    aapp: Celeriac, queue: str, raw_nc: Client, cleanup: list[str]
) -> None:
    define_two(aapp)
    await aapp.async_sync_schedules()
    broker = await aapp.broker()
    before = datetime.now(UTC)

    listed = {info.name: info for info in await list_schedules(broker.js, [queue])}
    assert sorted(listed) == ["hourly", "nightly"]
    nightly = listed["nightly"]
    assert not nightly.suspended
    assert nightly.schedule == "0 0 3 * * *"
    assert nightly.next_fire is not None
    assert before < nightly.next_fire <= before + timedelta(days=1)
    assert nightly.next_fire.astimezone(ZoneInfo("Europe/Berlin")).hour == 3
    hourly = listed["hourly"]
    assert hourly.next_fire is not None
    assert before < hourly.next_fire <= before + timedelta(hours=1, seconds=1)
    assert nightly.state is None  # no worker has handled a fire

    assert await suspend_schedule(broker.js, queue, "nightly") is True
    msg = await stored(raw_nc, queue, "nightly")
    assert msg.headers == {
        "Nats-TTL": "never",
        "Celeriac-Periodic": "nightly",
        "Celeriac-Suspended": "1",
    }
    assert PeriodicTask.model_validate_json(msg.data) == aapp.periodic_tasks["nightly"]
    assert await on_subject(raw_nc, queue, "nightly") == 1
    assert await suspend_schedule(broker.js, queue, "nightly") is False
    info = await find_schedule(broker.js, "nightly")
    assert info.suspended
    assert info.next_fire is None

    # A sync keeps it suspended (and, unchanged, leaves it alone).
    report = await aapp.async_sync_schedules()
    assert {r.change for r in report.results} == {Change.UNCHANGED}
    assert (await find_schedule(broker.js, "nightly", queue)).suspended

    assert await resume_schedule(broker.js, queue, "nightly") is True
    assert await resume_schedule(broker.js, queue, "nightly") is False
    msg = await stored(raw_nc, queue, "nightly")
    assert msg.headers == {
        **schedule_message(aapp.periodic_tasks["nightly"])[1],
        "Nats-Rollup": "sub",
    }
    assert await on_subject(raw_nc, queue, "nightly") == 1  # the rollup removed the plain one

    await delete_schedule(broker.js, queue, "nightly")
    assert await stored(raw_nc, queue, "nightly") is None
    assert [info.name for info in await list_schedules(broker.js, [queue])] == ["hourly"]
    with pytest.raises(ScheduleNotFoundError, match="unknown schedule 'nightly'"):
        await delete_schedule(broker.js, queue, "nightly")
    with pytest.raises(ScheduleNotFoundError):
        await find_schedule(broker.js, "nightly")


@pytest.mark.integration
async def test_a_changed_definition_of_a_suspended_schedule_stays_suspended(
    nats_url: str, queue: str, raw_nc: Client, cleanup: list[str]
) -> None:
    app = Celeriac("v1", nats_url, default_queue=queue)
    app.add_periodic_task(60, app.signature("t.x", (1,)), name="job")
    await app.async_sync_schedules()
    await suspend_schedule((await app.broker()).js, queue, "job")
    await app.aclose()
    app = Celeriac("v2", nats_url, default_queue=queue)
    app.add_periodic_task(60, app.signature("t.x", (2,)), name="job")
    report = await app.async_sync_schedules()
    info = await find_schedule((await app.broker()).js, "job", queue)
    await app.aclose()
    assert [r.change for r in report.results] == [Change.SUSPENDED]
    assert info.suspended
    assert info.periodic.args == [2]
    assert await on_subject(raw_nc, queue, "job") == 1


@pytest.mark.integration
async def test_a_name_on_two_queues_needs_the_queue(
    aapp: Celeriac, queue: str, raw_nc: Client, cleanup: list[str]
) -> None:
    other = unique_queue()
    cleanup.append(other)
    aapp.add_periodic_task("@daily", aapp.signature("t.x"), name="twin")
    await aapp.async_sync_schedules()
    second = Celeriac("second", aapp.nats_url, default_queue=other)
    second.add_periodic_task("@daily", second.signature("t.x"), name="twin")
    await second.async_sync_schedules()
    await second.aclose()
    broker = await aapp.broker()
    with pytest.raises(AmbiguousScheduleError, match=r"several queues.*-Q"):
        await find_schedule(broker.js, "twin")
    assert (await find_schedule(broker.js, "twin", other)).queue == other


async def take(nc: Client, queue: str, accept: Callable[[Any], bool] = lambda m: True) -> Any:
    """The next message on the queue's task subject that ``accept`` takes (acked)."""
    sub = await nc.jetstream().pull_subscribe_bind(names.CONSUMER_NAME, names.stream_name(queue))

    async def fetch() -> Any:
        for msg in await sub.fetch(1, timeout=1):
            await msg.ack()
            if accept(msg):
                return msg
        return None

    try:
        return await await_until(fetch, timeout=15, what=f"a message on {queue}")
    finally:
        await sub.unsubscribe()


@pytest.mark.integration
async def test_the_server_fires_the_schedule_on_the_task_subject(
    aapp: Celeriac, queue: str, raw_nc: Client, cleanup: list[str]
) -> None:
    aapp.add_periodic_task("@every 1s", aapp.signature("t.tick", (5,)), name="tick")
    await aapp.async_sync_schedules()
    fire = await take(raw_nc, queue)
    assert fire.subject == names.task_subject(queue)
    assert fire.headers["Celeriac-Periodic"] == "tick"
    assert fire.headers["Nats-Scheduler"] == schedule_subject(queue, "tick")
    assert fire.headers["Nats-TTL"] == "1s"  # a fire nobody takes expires after one interval
    assert "Nats-Schedule-Next" in fire.headers
    assert PeriodicTask.model_validate_json(fire.data) == aapp.periodic_tasks["tick"]
    await delete_schedule((await aapp.broker()).js, queue, "tick")


@pytest.mark.integration
async def test_the_schedule_outlives_the_streams_age_limit(
    nats_url: str, queue: str, raw_nc: Client, cleanup: list[str]
) -> None:
    # A stream whose messages live 2 s: the schedule message itself must not expire.
    settings = jetstream.QueueSettings(max_age_seconds=2, duplicate_window_seconds=1)
    js = raw_nc.jetstream()
    await js.add_stream(StreamConfig(**jetstream.work_stream_config(queue, settings)))
    await js.add_consumer(
        names.stream_name(queue), ConsumerConfig(**jetstream.consumer_config(queue, settings))
    )
    app = Celeriac("aged", nats_url, default_queue=queue)
    app.add_periodic_task("@every 1s", app.signature("t.tick"), name="tick")
    await app.async_sync_schedules()
    written = (await stored(raw_nc, queue, "tick")).time
    late = await take(
        raw_nc, queue, lambda m: m.metadata.timestamp > written + timedelta(seconds=4)
    )
    assert late.headers["Celeriac-Periodic"] == "tick"
    assert (await stored(raw_nc, queue, "tick")).time == written
    await delete_schedule((await app.broker()).js, queue, "tick")
    await app.aclose()


@pytest.mark.integration
async def test_trigger_enqueues_one_run_now(
    aapp: Celeriac, queue: str, raw_nc: Client, cleanup: list[str]
) -> None:
    aapp.add_periodic_task(
        "@yearly", aapp.signature("t.report", (1,), {"k": "v"}, headers={"h": "1"}), name="report"
    )
    await aapp.async_sync_schedules()
    broker = await aapp.broker()
    before = datetime.now(UTC).replace(microsecond=0)
    run = await trigger(broker, queue, "report")
    after = datetime.now(UTC)
    stamp = datetime.strptime(run.removeprefix("report."), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert before <= stamp <= after
    msg = await take(raw_nc, queue)
    assert msg.headers["Nats-Msg-Id"] == run
    task = TaskMessage.model_validate_json(msg.data)
    assert (task.id, task.task, task.args, task.kwargs) == (run, "t.report", [1], {"k": "v"})
    assert task.headers == {"h": "1"}
    assert task.expires is not None
    next_year = datetime(stamp.year + 1, 1, 1, tzinfo=UTC)
    assert task.expires == next_year  # a run may start until the next slot
    with pytest.raises(ScheduleNotFoundError):
        await trigger(broker, queue, "no-such-schedule")


# The command line --------------------------------------------------------------------------


def celeriac(
    *argv: str, nats_url: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "CELERIAC_NATS_URL": nats_url,
        "PYTHONPATH": os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH")] if p),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "celeriac", "schedule", *argv],
        check=False,
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=60,
    )


@pytest.mark.integration
def test_cli_sync_list_suspend_resume_trigger_delete(
    nats_url: str, queue: str, tmp_path: Path, cleanup: list[str]
) -> None:
    module = f"periodic_cli_{queue.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(f"""
        from celeriac.app import Celeriac

        app = Celeriac("cli-app", default_queue={queue!r})


        @app.periodic_task("0 6 * * *", tz="Europe/Berlin", name="morning")
        def morning() -> None: ...


        @app.periodic_task(every=3600, name="hourly", args=(1,))
        def hourly(x: int) -> None: ...
        """)
    )

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        done = celeriac(*argv, nats_url=nats_url, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done

    synced = run("sync", "-A", module)
    assert "created: morning" in synced.stdout
    assert "2 created" in synced.stdout.splitlines()[-1]
    assert "2 unchanged" in run("sync", "-A", module).stdout

    listed = json.loads(run("list", "-o", "json", "-Q", queue).stdout)
    assert [(s["name"], s["schedule"], s["suspended"]) for s in listed] == [
        ("hourly", "@every 3600s", False),
        ("morning", "0 0 6 * * *", False),
    ]
    morning = listed[1]
    assert morning["time_zone"] == "Europe/Berlin"
    assert morning["task"] == f"{module}.morning"
    assert morning["next_fire"].endswith("Z")
    assert (morning["runs"], morning["skips"], morning["last_run"]) == (0, 0, None)

    table = run("list", "-Q", queue).stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "QUEUE", "TASK", "SCHEDULE"]
    assert table[2].startswith("morning")
    assert "Europe/Berlin" in table[2]

    assert run("suspend", "morning").stdout.startswith("suspended: morning")
    listed = json.loads(run("list", "-o", "json", "-Q", queue).stdout)
    assert [s["suspended"] for s in listed] == [False, True]
    assert listed[1]["next_fire"] is None
    assert run("resume", "morning", "-Q", queue).stdout.startswith("resumed: morning")
    triggered = run("trigger", "morning").stdout
    assert f"task morning.{datetime.now(UTC):%Y%m%d}" in triggered
    assert run("delete", "morning").stdout.startswith("deleted: morning")
    listed = json.loads(run("list", "-o", "json", "-Q", queue).stdout)
    assert [s["name"] for s in listed] == ["hourly"]


@pytest.mark.integration
async def test_cli_leaves_a_taskschedules_schedule_to_its_operator(
    nats_url: str, queue: str, aapp: Celeriac, cleanup: list[str]
) -> None:
    broker = await aapp.broker()
    await broker.ensure_queue(queue)
    managed = define(name="shop.digest", task="t.digest", queue=queue, every=60)
    await store(broker.js, managed)
    for action in ("suspend", "resume", "delete"):
        done = await asyncio.to_thread(celeriac, action, "shop.digest", nats_url=nats_url)
        assert done.returncode == 1
        assert done.stderr.startswith(
            "celeriac schedule: schedule shop.digest belongs to TaskSchedule shop/digest"
        ), done.stderr
        assert "kubectl" in done.stderr and "--force" in done.stderr
    forced = await asyncio.to_thread(
        celeriac, "delete", "shop.digest", "--force", nats_url=nats_url
    )
    assert forced.returncode == 0, forced.stderr
    with pytest.raises(ScheduleNotFoundError):
        await find_schedule(broker.js, "shop.digest", queue)


@pytest.mark.integration
def test_cli_unknown_schedule_is_one_plain_line(nats_url: str, queue: str) -> None:
    for action in ("trigger", "suspend", "resume", "delete"):
        done = celeriac(action, f"none-{queue}", nats_url=nats_url)
        assert done.returncode == 1
        assert done.stderr.splitlines() == [
            f"celeriac schedule: unknown schedule 'none-{queue}'"
        ], done.stderr
    done = celeriac("delete", "Not A Name", nats_url=nats_url)
    assert done.returncode == 1
    assert done.stderr.startswith("celeriac schedule: invalid schedule name")
    assert len(done.stderr.splitlines()) == 1


def test_cli_without_nats_is_one_plain_line() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    done = celeriac("list", nats_url=url, env={"CELERIAC_CONNECT_TIMEOUT": "0.5"})
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"celeriac schedule: cannot connect to NATS at {url}")


def test_cli_app_that_cannot_be_loaded(tmp_path: Path) -> None:
    done = celeriac("sync", "-A", "no_such_module_here", nats_url="nats://127.0.0.1:1")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "celeriac schedule: cannot import app module 'no_such_module_here': "
        "No module named 'no_such_module_here'"
    ]
