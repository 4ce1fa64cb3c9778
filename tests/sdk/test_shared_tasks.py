"""``@shared_task``, the current app, ``base=`` and ``task_cls`` (no server needed)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import celeriac
from celeriac import current, shared
from celeriac.app import Celeriac
from celeriac.async_result import AsyncResult, GroupResult
from celeriac.current import NoCurrentAppError, current_app
from celeriac.shared import SharedTask, shared_task
from celeriac.task import Task


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def no_current_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a fresh process: no app created yet (restored afterwards)."""
    monkeypatch.setattr(current, "_current", None)


@pytest.fixture
def apps() -> Iterator[list[Celeriac]]:
    made: list[Celeriac] = []
    yield made
    for app in made:
        app.close()


def make(apps: list[Celeriac], name: str = "shared-tests", **kwargs: Any) -> Celeriac:
    app = Celeriac(name, "nats://127.0.0.1:4999", **kwargs)
    apps.append(app)
    return app


def test_a_shared_task_belongs_to_apps_made_before_and_after(
    apps: list[Celeriac], no_current_app: None
) -> None:
    name = unique("lib.add")

    @shared_task(name=name)
    def add(a: int, b: int) -> int:
        return a + b

    # No app yet (a library imported first): calling runs the function here.
    assert isinstance(add, SharedTask) and add(2, 3) == 5 and add.__name__ == "add"
    with pytest.raises(NoCurrentAppError, match=rf"shared task {name} needs a Celeriac app"):
        add.s(1, 2)
    first = make(apps, "first")
    later_name = unique("proj.tasks.mul")

    @shared_task(name=later_name, queue="math")  # a Django tasks.py imported after the app
    def mul(a: int, b: int) -> int:
        return a * b

    second = make(apps, "second")
    for app in (first, second):
        assert app.tasks[name].app is app and app.tasks[later_name].queue == "math"
    assert first.tasks[name] is not second.tasks[name]
    # The shared task stands for the current app's (the last created) ...
    assert add.resolve() is second.tasks[name]
    assert add.s(1, 2).client is second.client and mul.queue == "math"
    # ... until another app is made current.
    first.set_current()
    assert add.resolve() is first.tasks[name] and current_app.name == "first"
    second.set_default()
    assert add.app is second


def test_default_name_options_and_bind(apps: list[Celeriac]) -> None:
    @shared_task
    def plain() -> str:
        return "plain"

    @shared_task(bind=True, max_retries=1)
    def bound(self: Any, x: int) -> tuple[str, int]:
        return self.request.id, x

    app = make(apps)
    plain_name = f"{__name__}.test_default_name_options_and_bind.<locals>.plain"
    assert plain.name == plain_name and app.tasks[plain_name]() == "plain"
    assert bound(4) == ("local", 4)  # a bound task needs the app for its request
    assert bound.max_retries == 1 and bound.bind is True


class BadAttributeTask(Task):
    """A base class whose attribute fails the run option's check."""

    max_retries = -1


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"priority": 9}, TypeError, r"unknown task option.*priority"),
        ({"queue": "Bad Queue"}, ValueError, r"invalid queue name"),
        ({"base": dict}, TypeError, r"base must be a subclass of celeriac\.Task"),
        ({"base": "no_such_module:Task"}, celeriac.ImproperlyConfigured,
         r"base: cannot import 'no_such_module:Task'"),
        ({"base": BadAttributeTask}, ValueError, r"BadAttributeTask\.max_retries must be from 0"),
        ({"max_retries": -1}, ValueError, r"max_retries must be from 0 to 10000, not -1"),
        ({"max_retries": "3"}, TypeError, r"max_retries must be a whole number"),
        ({"time_limit": 0}, ValueError, r"time_limit must be above 0"),
        ({"soft_time_limit": "1m"}, TypeError, r"soft_time_limit must be a number of seconds"),
        ({"autoretry_for": (ValueError, 3)}, TypeError, r"autoretry_for .*not an exception class"),
        ({"retry_kwargs": {"delay": 1}}, TypeError, r"retry_kwargs: unknown key\(s\) delay"),
        ({"retry_jitter": "no"}, TypeError, r"retry_jitter must be True or False"),
        ({"webhook": {"events": ["success"]}}, ValueError, r"url"),
    ],
)  # fmt: skip
def test_bad_options_fail_at_definition(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    """What @app.task refuses, @shared_task refuses where the task is defined, and
    nothing is left for the apps to trip over."""
    before = shared.definition_count()
    with pytest.raises(error, match=message):
        shared_task(name=unique("bad"), **options)(lambda: None)
    assert shared.definition_count() == before


def test_base_may_name_its_class_as_text(apps: list[Celeriac]) -> None:
    name = unique("audited")

    @shared_task(name=name, base=f"{__name__}:AuditedTask")
    def audited() -> None: ...

    assert type(make(apps).tasks[name]) is AuditedTask


class PickyTask(Task):
    """A task class that refuses some tasks, as a project's own base class might."""

    def __init__(self, app: Any, fn: Any, *, name: str, client: Any, **options: Any) -> None:
        if "refused" in name:
            raise RuntimeError(f"{name} is not wanted here")
        super().__init__(app, fn, name=name, client=client, **options)


def test_a_shared_task_one_app_cannot_build_leaves_the_others_alone(
    apps: list[Celeriac], caplog: pytest.LogCaptureFixture
) -> None:
    first, refused, last = unique("lib.first"), unique("lib.refused"), unique("lib.last")
    defined = {name: shared_task(name=name)(lambda: None) for name in (first, refused, last)}
    picky = make(apps, "picky", task_cls=PickyTask)
    plain = make(apps, "plain", set_as_current=False)

    with caplog.at_level("ERROR", logger="celeriac.app"):
        registered = picky.tasks
    assert first in registered and last in registered and refused not in registered
    assert f"shared task {refused} is not registered in app picky" in caplog.text
    # Handled once: reading the registry again does not try (and log) it again.
    caplog.clear()
    assert picky.tasks is registered and not caplog.text
    with pytest.raises(
        celeriac.ImproperlyConfigured,
        match=rf"shared task {refused} could not be registered in app picky: RuntimeError",
    ):
        defined[refused].resolve(picky)
    # Another app is not affected at all.
    assert {first, refused, last} <= set(plain.tasks)


def test_registering_never_changes_a_registry_already_read(apps: list[Celeriac]) -> None:
    """The dict app.tasks returns is never changed: a registration makes a new one,
    so a worker iterating it meanwhile sees a consistent set."""
    app = make(apps)
    seen = app.tasks
    before = dict(seen)
    own = unique("own")
    app.task(name=own)(lambda: None)
    library = unique("library")
    shared_task(name=library)(lambda: None)
    now = app.tasks
    assert seen == before and own not in seen and library not in seen
    assert {own, library} <= set(now)


def test_the_apps_own_task_wins_over_a_shared_one(apps: list[Celeriac]) -> None:
    name = unique("clash")
    app = make(apps)

    @app.task(name=name)
    def own() -> str:
        return "own"

    @shared_task(name=name)
    def shared() -> str:
        return "shared"

    assert app.tasks[name].fn is own.fn and shared() == "own"


def test_set_as_current_false_leaves_the_current_app(apps: list[Celeriac]) -> None:
    main = make(apps, "main")
    make(apps, "side", set_as_current=False)
    assert current.get_current() is main and celeriac.current_app.name == "main"


class AuditedTask(Task):
    """A base class: attributes supply option defaults."""

    max_retries = 7
    time_limit = 30.0


class DjangoLikeTask(Task):
    pass


def test_base_class_and_task_cls(apps: list[Celeriac]) -> None:
    app = make(apps)

    @app.task(base=AuditedTask, name=unique("based"))
    def based() -> None: ...

    @app.task(base=AuditedTask, name=unique("overridden"), max_retries=2)
    def overridden() -> None: ...

    assert type(based) is AuditedTask and (based.max_retries, based.time_limit) == (7, 30.0)
    assert overridden.max_retries == 2
    with pytest.raises(TypeError, match=r"base must be a subclass of celeriac\.Task"):
        app.task(base=object)  # type: ignore[arg-type]

    by_class = make(apps, task_cls=AuditedTask)
    by_path = make(apps, task_cls=f"{__name__}:AuditedTask")
    assert by_class.task_cls is by_path.task_cls is AuditedTask
    with pytest.raises(celeriac.ImproperlyConfigured, match="task_cls: cannot import"):
        make(apps, task_cls="no_such_module:Task")


def test_task_cls_set_after_the_app_applies_to_shared_tasks(apps: list[Celeriac]) -> None:
    """Django: the app is created, its task class set, then tasks.py imported."""
    name = unique("orders.tasks.ship")

    @shared_task(name=name)
    def ship() -> None: ...

    app = make(apps)
    app.task_cls = DjangoLikeTask  # before anything read app.tasks

    @app.task(name=unique("orders.tasks.bill"))
    def bill() -> None: ...

    assert type(app.tasks[name]) is DjangoLikeTask and type(bill) is DjangoLikeTask


def test_results_need_no_client_with_a_current_app(
    apps: list[Celeriac], no_current_app: None
) -> None:
    with pytest.raises(NoCurrentAppError, match=r"AsyncResult\(id\) needs a Celeriac app"):
        AsyncResult("some-id")
    app = make(apps)
    other = make(apps, "other", set_as_current=False)
    assert AsyncResult("some-id").client is app.client
    assert AsyncResult("some-id", other).client is other.client
    assert AsyncResult("some-id", app=other).client is other.client
    assert AsyncResult("some-id", other.client).client is other.client
    with pytest.raises(TypeError, match="expected a Celeriac app or a Client"):
        AsyncResult("some-id", "not an app")

    @app.task(name=unique("t"))
    def task() -> None: ...

    assert task.AsyncResult("x").client is app.client and app.AsyncResult("x").id == "x"
    group = GroupResult("g", ["a", AsyncResult("b")])
    assert [r.id for r in group.results] == ["a", "b"] and group.client is app.client
    assert app.GroupResult("g2", ["c"]).results[0].client is app.client
    from celeriac.result import AsyncResult as CeleryStyle

    assert CeleryStyle is AsyncResult


def test_current_app_proxy(apps: list[Celeriac], no_current_app: None) -> None:
    assert not current_app and "none yet" in repr(current_app)
    with pytest.raises(NoCurrentAppError, match=r"current_app\.conf needs a Celeriac app"):
        _ = current_app.conf
    app = make(apps, "proxied")
    assert current_app and current_app.conf is app.conf
    assert current_app._get_current_object() is app
