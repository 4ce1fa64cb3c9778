"""Retry and time-limit options of a task: where each value comes from, how mistakes are
reported, and ``self.retry()`` inside a bound task (no server: nothing is sent)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from celeriac import runoptions
from celeriac.app import Celeriac
from celeriac.exceptions import ExceptionInfo, ImproperlyConfigured, MaxRetriesExceededError, Retry
from celeriac.task import Request, Task


@pytest.fixture
def app() -> Celeriac:
    return Celeriac("run-options", "nats://127.0.0.1:1")


def make(app: Any, cls: type[Task] = Task, **options: Any) -> Task:
    """A task of class ``cls`` registered as ``@app.task(base=cls, **options)`` would be."""

    def work(x: int = 0) -> int:
        return x

    client = Celeriac("client", "nats://127.0.0.1:1").client
    return cls(app, work, name="t.work", client=client, **options)


def test_celery_defaults(app: Celeriac) -> None:
    task = make(app)
    assert task.autoretry_for == () and task.dont_autoretry_for == ()
    assert dict(task.retry_kwargs) == {}
    assert task.max_retries == 3 and task.default_retry_delay == 180.0
    assert task.retry_backoff is False and task.retry_backoff_max == 600.0
    assert task.retry_jitter is True
    assert task.time_limit is None and task.soft_time_limit is None
    assert task.MaxRetriesExceededError is MaxRetriesExceededError


def test_decorator_options(app: Celeriac) -> None:
    @app.task(
        autoretry_for=[ConnectionError],
        dont_autoretry_for=(ConnectionResetError,),
        retry_kwargs={"max_retries": 5, "countdown": 2},
        retry_backoff=True,
        retry_backoff_max=60,
        retry_jitter=False,
        default_retry_delay=10,
        max_retries=None,
        time_limit=30,
        soft_time_limit=20,
    )
    def fetch() -> None: ...

    assert fetch.autoretry_for == (ConnectionError,)  # a list becomes a tuple

    @app.task(autoretry_for=["json.JSONDecodeError", "TimeoutError", OSError])
    def parse() -> None: ...

    # Classes named as text (a settings file), imported when the task is registered.
    assert parse.autoretry_for == (json.JSONDecodeError, TimeoutError, OSError)
    assert fetch.dont_autoretry_for == (ConnectionResetError,)
    assert fetch.retry_kwargs == {"max_retries": 5, "countdown": 2}
    assert (fetch.retry_backoff, fetch.retry_backoff_max, fetch.retry_jitter) == (True, 60, False)
    assert (fetch.default_retry_delay, fetch.max_retries) == (10, None)
    assert (fetch.time_limit, fetch.soft_time_limit) == (30, 20)


class Base(Task):
    autoretry_for = (KeyError,)
    max_retries = 5
    retry_backoff = 2.0


class Child(Base):
    max_retries = 1


def test_base_class_attributes_are_the_defaults(app: Celeriac) -> None:
    task = make(app, Base)
    assert (task.autoretry_for, task.max_retries, task.retry_backoff) == ((KeyError,), 5, 2.0)
    assert task.retry_jitter is True  # not set by Base: Task's default
    child = make(app, Child)
    assert (child.autoretry_for, child.max_retries) == ((KeyError,), 1)
    override = make(app, Base, max_retries=0, autoretry_for=(OSError,))
    assert (override.autoretry_for, override.max_retries) == ((OSError,), 0)
    assert Base.max_retries == 5 and Task.max_retries == 3  # classes untouched


def conf_app(**conf: Any) -> Any:
    """An app whose ``conf`` maps Celery-style keys to values, as ``app.conf`` does."""
    return SimpleNamespace(conf=conf)


def test_app_conf_is_the_default_for_every_task() -> None:
    app = conf_app(
        task_autoretry_for=(Exception,),
        task_dont_autoretry_for=(KeyError,),
        task_max_retries=6,
        task_default_retry_delay=1,
        task_retry_backoff=0.5,
        task_retry_backoff_max=30,
        task_retry_jitter=False,
        task_time_limit=60,
        task_soft_time_limit=50,
        task_retry_kwargs={"countdown": 4},
    )
    task = make(app)
    assert task.autoretry_for == (Exception,) and task.dont_autoretry_for == (KeyError,)
    assert (task.max_retries, task.default_retry_delay) == (6, 1)
    assert (task.retry_backoff, task.retry_backoff_max, task.retry_jitter) == (0.5, 30, False)
    assert (task.time_limit, task.soft_time_limit) == (60, 50)
    assert task.retry_kwargs == {"countdown": 4}
    # The task's own options and its class's attributes win over the app's.
    assert make(app, autoretry_for=()).autoretry_for == ()
    assert make(app, Base).autoretry_for == (KeyError,)
    assert make(app, Base).retry_jitter is False
    # Keys the app does not set (None) leave the defaults.
    assert make(conf_app(task_max_retries=None)).max_retries == 3


def test_the_apps_own_conf_and_base_classes(app: Celeriac) -> None:
    app.conf.update(task_autoretry_for=("json.JSONDecodeError",), task_max_retries=7)

    @app.task
    def parse() -> None: ...

    @app.task(base=Base)
    def lookup() -> None: ...

    assert (parse.autoretry_for, parse.max_retries) == ((json.JSONDecodeError,), 7)
    assert isinstance(lookup, Base)
    assert (lookup.autoretry_for, lookup.max_retries) == ((KeyError,), 5)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"autoretry_for": ValueError}, TypeError,
         "autoretry_for must be a tuple of exception classes, such as (ConnectionError,), not"),
        ({"autoretry_for": (ValueError, 3)}, TypeError,
         "autoretry_for must be a tuple of exception classes, such as (ConnectionError,); "
         "3 is not an exception class"),
        ({"autoretry_for": ("json.JSONDecodeErr",)}, TypeError,
         "autoretry_for: cannot import 'json.JSONDecodeErr' (module 'json' has no attribute"),
        ({"autoretry_for": ("nosuchmodule.Error",)}, TypeError,
         "autoretry_for: cannot import 'nosuchmodule.Error' (No module named"),
        ({"autoretry_for": ("json.dumps",)}, TypeError, "is not an exception class"),
        ({"autoretry_for": (int,)}, TypeError, "autoretry_for must be a tuple"),
        ({"dont_autoretry_for": Exception}, TypeError, "dont_autoretry_for must be a tuple"),
        ({"retry_kwargs": [("countdown", 1)]}, TypeError, "retry_kwargs must be a dict"),
        ({"retry_kwargs": {"eta": 1, "queue": "q"}}, TypeError,
         "retry_kwargs: unknown key(s) eta, queue; known: countdown, max_retries"),
        ({"retry_kwargs": {"max_retries": -1}}, ValueError,
         "retry_kwargs['max_retries'] must be from 0 to 10000, not -1"),
        ({"retry_kwargs": {"countdown": "soon"}}, TypeError,
         "retry_kwargs['countdown'] must be a number of seconds"),
        ({"max_retries": -1}, ValueError, "max_retries must be from 0 to 10000, not -1"),
        ({"max_retries": 2.5}, TypeError, "max_retries must be a whole number or None"),
        ({"max_retries": True}, TypeError, "max_retries must be a whole number or None"),
        ({"retry_backoff": "yes"}, TypeError, "retry_backoff must be a number of seconds"),
        ({"retry_backoff": -1}, ValueError, "retry_backoff must be a number of seconds from 0"),
        ({"retry_backoff_max": float("inf")}, ValueError, "retry_backoff_max must be a number"),
        ({"retry_jitter": 1}, TypeError, "retry_jitter must be True or False, not 1"),
        ({"default_retry_delay": None}, TypeError, "default_retry_delay must be a number"),
        ({"time_limit": 0}, ValueError, "time_limit must be above 0 seconds, or None, not 0"),
        ({"soft_time_limit": -2}, ValueError, "soft_time_limit must be a number of seconds"),
        ({"autoretry": (ValueError,)}, TypeError, "unknown task option(s): autoretry"),
    ],
)  # fmt: skip
def test_mistakes_fail_at_registration_naming_the_option(
    app: Celeriac, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        app.task(**options)(lambda: None)


@pytest.mark.parametrize(
    ("setting", "value", "option", "expected"),
    [
        ("task_max_retries", 7, "max_retries", 7),
        ("task_max_retries", None, "max_retries", 3),  # unset again: the default
        ("task_autoretry_for", ("builtins.ConnectionError",), "autoretry_for",
         (ConnectionError,)),
        ("task_dont_autoretry_for", [KeyError], "dont_autoretry_for", (KeyError,)),
        ("task_retry_kwargs", {"countdown": 2}, "retry_kwargs", {"countdown": 2}),
        ("task_default_retry_delay", 5, "default_retry_delay", 5),
        ("task_retry_backoff", True, "retry_backoff", True),
        ("task_retry_backoff_max", timedelta(minutes=1), "retry_backoff_max", 60.0),
        ("task_retry_jitter", False, "retry_jitter", False),
        ("task_time_limit", timedelta(minutes=2), "time_limit", 120.0),
        ("task_soft_time_limit", 90, "soft_time_limit", 90),
    ],
)  # fmt: skip
def test_task_defaults_changed_after_registering_apply_to_registered_tasks(
    app: Celeriac, setting: str, value: Any, option: str, expected: Any
) -> None:
    """As with Django, whose settings reach app.conf once tasks.py may be imported: the
    options a task took from app.conf follow it; its own and its class's do not."""
    app.conf.update({setting: 1 if option == "max_retries" else None})

    @app.task
    def plain() -> None: ...

    @app.task(**{option: getattr(Task, option)})
    def own() -> None: ...

    class Declared(Task):
        pass

    setattr(Declared, option, getattr(Task, option))

    @app.task(base=Declared)
    def declared() -> None: ...

    app.conf.update({setting: value})
    assert getattr(plain, option) == expected
    assert getattr(own, option) == getattr(Task, option)
    assert getattr(declared, option) == getattr(Task, option)
    # A task registered afterwards reads the same.
    assert getattr(app.task(name="t.later")(lambda: None), option) == expected


def test_a_refused_update_changes_no_task(app: Celeriac) -> None:
    @app.task
    def plain() -> None: ...

    with pytest.raises(ImproperlyConfigured, match="task_time_limit must be above 0"):
        app.conf.update(task_max_retries=7, task_time_limit=0)
    assert (plain.max_retries, plain.time_limit) == (3, None)
    assert app.conf.get("task_max_retries") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (30, 30),
        (1.5, 1.5),
        (timedelta(minutes=2), 120.0),
        (timedelta(0), 0.0),
        ("30", TypeError("x must be a number of seconds (or a timedelta), not '30'")),
        (True, TypeError("x must be a number of seconds (or a timedelta), not True")),
        (None, TypeError("x must be a number of seconds (or a timedelta), not None")),
        (float("nan"), ValueError("x must be a number of seconds, not nan")),
        (float("-inf"), ValueError("x must be a number of seconds, not -inf")),
    ],
)
def test_seconds_are_numbers_or_timedeltas(value: Any, expected: Any) -> None:
    """One check for every "seconds" value, run options and app.conf alike."""
    if isinstance(expected, Exception):
        with pytest.raises(type(expected), match=re.escape(str(expected))):
            runoptions.duration("x", value)
    else:
        assert runoptions.duration("x", value) == expected


@pytest.mark.parametrize(
    ("options", "option", "expected"),
    [
        ({"time_limit": timedelta(minutes=5)}, "time_limit", 300.0),
        ({"soft_time_limit": timedelta(seconds=50)}, "soft_time_limit", 50.0),
        ({"default_retry_delay": timedelta(seconds=10)}, "default_retry_delay", 10.0),
        ({"retry_backoff": timedelta(seconds=2)}, "retry_backoff", 2.0),
        ({"retry_backoff_max": timedelta(hours=1)}, "retry_backoff_max", 3600.0),
        ({"retry_kwargs": {"countdown": timedelta(seconds=3)}}, "retry_kwargs",
         {"countdown": 3.0}),
    ],
)  # fmt: skip
def test_run_options_take_timedeltas(
    app: Celeriac, options: dict[str, Any], option: str, expected: Any
) -> None:
    assert getattr(app.task(**options)(lambda: None), option) == expected
    setting = runoptions.CONF_KEYS[option]
    app.conf.update({setting: options[option]})
    assert getattr(app.task(name="t.from-conf")(lambda: None), option) == expected
    negative = {"countdown": timedelta(days=-1)} if option == "retry_kwargs" else timedelta(-1)
    with pytest.raises(ValueError, match=r"must be a number of seconds from 0 to"):
        app.task(**{option: negative})(lambda: None)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("limits", "allowed"),
    [
        ((None, None, 3), 3),  # the task's
        ((None, 1, 3), 1),  # the message's
        ((5, 1, 3), 5),  # this retry() call's
        ((0, None, 3), 0),
        ((None, None, None), 10_000),  # None: Celery's "no limit", the protocol's cap
        ((20_000, None, None), 10_000),
    ],
)
def test_retries_allowed(limits: tuple[int | None, ...], allowed: int) -> None:
    assert runoptions.retries_allowed(*limits) == allowed


def test_mistakes_in_a_base_class_or_app_conf_name_where_they_are(app: Celeriac) -> None:
    class Wrong(Task):
        autoretry_for = ValueError

    with pytest.raises(TypeError, match=re.escape("Wrong.autoretry_for must be a tuple")):
        make(app, Wrong)
    with pytest.raises(TypeError, match=re.escape("app.conf task_retry_jitter must be True")):
        make(conf_app(task_retry_jitter="no"))


def bound(task: Task, retries: int, max_retries: int | None = None) -> Any:
    request = Request(id="t-1", task=task.name, retries=retries, max_retries=max_retries)
    return task.bound_context(request)


def test_self_retry_asks_for_a_retry_while_retries_are_left(app: Celeriac) -> None:
    task = make(app, max_retries=2)
    with pytest.raises(Retry) as asked:
        bound(task, retries=1).retry(countdown=5)
    assert asked.value.countdown == 5 and asked.value.exc is None
    cause = ValueError("flaky")
    with pytest.raises(Retry) as asked:
        bound(task, retries=0).retry(exc=cause, max_retries=1)
    assert asked.value.exc is cause and asked.value.max_retries == 1
    with pytest.raises(Retry) as asked:
        bound(task, retries=0).retry(eta=datetime.now(UTC) + timedelta(seconds=30))
    assert asked.value.countdown is not None and 28 < asked.value.countdown <= 30


def test_self_retry_past_max_retries_raises_in_the_task(app: Celeriac) -> None:
    task = make(app, max_retries=2)
    with pytest.raises(MaxRetriesExceededError, match=r"cannot retry t\.work\[t-1\]"):
        bound(task, retries=2).retry()
    cause = ValueError("still broken")
    with pytest.raises(ValueError, match="still broken") as raised:
        bound(task, retries=2).retry(exc=cause)
    assert raised.value is cause
    # This call's max_retries, else the message's, else the task's.
    with pytest.raises(Retry):
        bound(task, retries=2).retry(max_retries=3)
    with pytest.raises(MaxRetriesExceededError):
        bound(task, retries=1, max_retries=1).retry()
    with pytest.raises(Retry):
        bound(task, retries=2, max_retries=4).retry()
    with pytest.raises(MaxRetriesExceededError):
        bound(make(app, max_retries=0), retries=0).retry()


def test_self_retry_refuses_what_a_redelivery_cannot_do(app: Celeriac) -> None:
    context = bound(make(app), retries=0)
    with pytest.raises(TypeError, match=r"retry\(\) does not support args"):
        context.retry(args=(1,))
    with pytest.raises(TypeError, match=r"does not support kwargs"):
        context.retry(kwargs={"x": 1})
    with pytest.raises(TypeError, match=r"does not support throw=False"):
        context.retry(throw=False)
    with pytest.raises(TypeError, match=r"does not support queue"):
        context.retry(queue="other")


def test_hooks_are_no_ops_by_default(app: Celeriac) -> None:
    task = make(app)
    einfo = ExceptionInfo(ValueError("x"), "Traceback ...\nValueError: x\n")
    assert einfo.type is ValueError and str(einfo).endswith("ValueError: x\n")
    task.before_start("t-1", (1,), {})
    task.on_success(1, "t-1", (1,), {})
    task.on_retry(einfo.exception, "t-1", (1,), {}, einfo)
    task.on_failure(einfo.exception, "t-1", (1,), {}, einfo)
    task.after_return("FAILURE", einfo.exception, "t-1", (1,), {}, einfo)
