"""The current app: the one ``AsyncResult(id)``, ``@shared_task`` and ``current_app`` use;
and the task whose code runs in this context, which the tasks it submits are linked to.

As in Celery, every ``Celeriac(...)`` becomes the current app when it is created
(unless ``set_as_current=False``), and ``app.set_current()`` / ``app.set_default()``
make an app current later. It is one per process, shared by all threads: a program
with several apps picks the one that code without an app should use.

This module sits under ``celeriac.app`` and knows apps only as objects with a
``client``, ``conf`` and ``tasks``.

The running task is a context variable, not process state: the worker runs many tasks
at once (asyncio tasks, threads), and each sees its own.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any, NamedTuple

from celeriac.exceptions import CeleriacError

_lock = threading.Lock()
_current: Any = None


class NoCurrentAppError(CeleriacError, RuntimeError):
    """Something needs the current app and no ``Celeriac(...)`` was created yet."""


def set_current(app: Any) -> None:
    """Make ``app`` the current app."""
    global _current  # noqa: PLW0603 - the one piece of process state, as in Celery
    with _lock:
        _current = app


def get_current() -> Any:
    """The current app, or None when no app was created yet."""
    return _current


def require(purpose: str) -> Any:
    """The current app; ``NoCurrentAppError`` saying what needed it when there is none."""
    app = _current
    if app is None:
        raise NoCurrentAppError(
            f"{purpose} needs a Celeriac app and none exists yet: create one first "
            "(app = Celeriac('proj', broker='nats://...')), or pass app="
        )
    return app


class _CurrentApp:
    """``celeriac.current_app``: stands for whichever app is current when used."""

    def __getattr__(self, name: str) -> Any:
        return getattr(require(f"current_app.{name}"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(require(f"current_app.{name}"), name, value)

    def __repr__(self) -> str:
        app = _current
        return f"<current_app: {app!r}>" if app is not None else "<current_app: none yet>"

    def __bool__(self) -> bool:
        return _current is not None

    def _get_current_object(self) -> Any:
        """The app itself (Celery's proxy spelling)."""
        return require("current_app")


current_app: Any = _CurrentApp()


class Caller(NamedTuple):
    """The task whose code is running: a task it submits gets ``parent_id=id`` and
    ``root_id=root_id``."""

    id: str
    root_id: str


_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "celeriac_caller", default=None
)


def calling_task() -> Caller | None:
    """The task whose code runs in this context; None outside task code."""
    return _caller.get()


def set_calling_task(caller: Caller | None) -> Caller | None:
    """Make ``caller`` the task running in this context; returns the one before, to
    set back when its code returns (a plain set, unlike a token's reset, works even
    when a coroutine is closed from another context)."""
    before = _caller.get()
    _caller.set(caller)
    return before
