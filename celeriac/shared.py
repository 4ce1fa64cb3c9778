"""``@shared_task``: tasks defined without an app, for reusable apps and libraries.

The rule: a shared task belongs to **every** app. Each definition is kept here, in
order; an app registers the definitions it has not seen yet whenever its task
registry is read (``app.tasks``, which the worker and the shared task itself read).
So it does not matter whether the module defining the task is imported before the
app is created (a library) or after (a Django project's ``tasks.py``), and the app's
``task_cls`` in force at that moment is the default base class.

What ``@shared_task`` returns stands for the task as registered in the current app
(``celeriac.current``): ``add.delay(2, 3)`` submits through that app. Calling it
(``add(2, 3)``) runs the function here, with no app needed unless it is bound.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, overload

from celeriac import current
from celeriac.exceptions import ImproperlyConfigured
from celeriac.task import Task, check_options


@dataclass(frozen=True)
class SharedDefinition:
    """One ``@shared_task``: what each app builds its own ``Task`` from."""

    fn: Callable[..., Any]
    name: str
    base: type[Task] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


_lock = threading.Lock()
# Append-only: an app remembers how many it has registered.
_definitions: list[SharedDefinition] = []


def definition_count() -> int:
    """How many shared tasks were defined so far."""
    return len(_definitions)


def definitions_from(index: int) -> list[SharedDefinition]:
    """The definitions made after the first ``index`` ones, in order."""
    with _lock:
        return _definitions[index:]


class SharedTask:
    """A shared task: forwards to its ``Task`` in the current app (``resolve()``)."""

    def __init__(self, definition: SharedDefinition) -> None:
        self.definition = definition
        self.name = definition.name
        functools.update_wrapper(self, definition.fn)

    def __repr__(self) -> str:
        return f"<shared task {self.name}>"

    def resolve(self, app: Any = None) -> Task:
        """This task as registered in ``app`` (default: the current app)."""
        app = app if app is not None else current.require(f"shared task {self.name}")
        task: Task | None = app.tasks.get(self.name)
        if task is None:
            failure = app._shared_failures.get(self.name)
            if failure is None:
                raise KeyError(self.name)
            raise ImproperlyConfigured(
                f"shared task {self.name} could not be registered in app {app.name}: "
                f"{type(failure).__name__}: {failure}"
            ) from failure
        return task

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function here, now (as calling an ``@app.task`` does)."""
        if current.get_current() is None and not self.definition.options.get("bind"):
            return self.definition.fn(*args, **kwargs)
        return self.resolve()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # delay, apply_async, s, si, signature, AsyncResult, queue, max_retries, ...
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.resolve(), name)


@overload
def shared_task(fn: Callable[..., Any], /) -> SharedTask: ...


@overload
def shared_task(
    *, name: str | None = None, base: type[Task] | str | None = None, **options: Any
) -> Callable[[Callable[..., Any]], SharedTask]: ...


def shared_task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    base: type[Task] | str | None = None,
    **options: Any,
) -> SharedTask | Callable[[Callable[..., Any]], SharedTask]:
    """Define a task for every app: ``@shared_task`` or ``@shared_task(bind=True, ...)``.

    Takes the options of ``@app.task`` (``name``, ``base``, ``queue``, ``bind``,
    ``max_retries``, ...), checked here as ``@app.task`` checks them, so a mistake
    fails where the task is defined. See the module docstring for which app runs it.
    """
    cls = check_options(options, base)

    def define(func: Callable[..., Any]) -> SharedTask:
        definition = SharedDefinition(
            func, name or f"{func.__module__}.{func.__qualname__}", cls, dict(options)
        )
        with _lock:
            _definitions.append(definition)
        return SharedTask(definition)

    if fn is not None:
        return define(fn)
    return define
