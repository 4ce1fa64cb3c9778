"""How a task runs on a worker: which failures retry, how often and how late, its time limits.

Each option has its Celery name and a default on ``celeriac.task.Task``. A task's
value comes from, first to last: the ``@app.task(...)`` option, an attribute of a
``Task`` subclass (``base=``), the app's configuration (``app.conf``, key
``task_<option>``, e.g. ``task_autoretry_for``), the default on ``Task``. Every
value is checked when the task is registered, so a mistake fails at import time
with an error naming the option; the worker then only reads checked values. The
options a task takes from ``app.conf`` or ``Task`` follow later changes to
``app.conf`` (``follows_conf``, ``configured``): Django applies its settings only
once the task modules may have been imported.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from celeriac.protocol.envelope import MAX_RETRIES, MAX_SECONDS

# The keys ``retry_kwargs`` may hold (what an automatic retry passes to ``retry()``).
RETRY_KWARGS = ("countdown", "max_retries")


def duration(name: str, value: Any) -> float:
    """A finite number of seconds, given as a number or a ``timedelta`` (as Celery
    takes them); ``TypeError``/``ValueError`` naming ``name`` otherwise. The one
    check of seconds for run options and ``app.conf`` settings alike."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds (or a timedelta), not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a number of seconds, not {value}")
    return value


def _number(name: str, value: Any) -> float:
    checked = duration(name, value)
    if checked < 0 or checked > MAX_SECONDS:
        raise ValueError(f"{name} must be a number of seconds from 0 to {MAX_SECONDS}, not {value}")
    return checked


def _imported(name: str, path: str) -> Any:
    """The class a settings file names as text: ``"requests.ConnectionError"``."""
    module, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module or "builtins"), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise TypeError(f"{name}: cannot import {path!r} ({exc})") from None


def exception_classes(name: str, value: Any) -> tuple[type[BaseException], ...]:
    """A tuple (or list) of exception classes, returned as a tuple; an item may name
    its class as text (``"requests.ConnectionError"``), as in a settings file."""
    hint = f"{name} must be a tuple of exception classes, such as (ConnectionError,)"
    if not isinstance(value, tuple | list):
        raise TypeError(f"{hint}, not {value!r}")
    classes = [_imported(name, item) if isinstance(item, str) else item for item in value]
    for item in classes:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(f"{hint}; {item!r} is not an exception class")
    return tuple(classes)


def max_retries(name: str, value: Any) -> int | None:
    """A whole number of retries, or None (as many as the protocol allows)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number or None, not {value!r}")
    if not 0 <= value <= MAX_RETRIES:
        raise ValueError(f"{name} must be from 0 to {MAX_RETRIES}, not {value}")
    return value


def retries_allowed(*limits: int | None) -> int:
    """How many retries a task may have had before it stops retrying: the first of
    ``limits`` that is set, most specific first (``retry(max_retries=)``, the
    message's, the task's); None is Celery's "no limit", which the protocol still
    caps at ``MAX_RETRIES``."""
    limit = next((value for value in limits if value is not None), None)
    return MAX_RETRIES if limit is None else min(limit, MAX_RETRIES)


def seconds(name: str, value: Any) -> float:
    """A delay: a finite number of seconds >= 0."""
    return _number(name, value)


def time_limit(name: str, value: Any) -> float | None:
    """None, or a number of seconds above 0."""
    if value is None:
        return None
    checked = _number(name, value)
    if checked <= 0:
        raise ValueError(f"{name} must be above 0 seconds, or None, not {value}")
    return checked


def retry_backoff(name: str, value: Any) -> bool | float:
    """False (no backoff), True (1 s), or the base of the exponential in seconds."""
    if isinstance(value, bool):
        return value
    return _number(name, value)


def flag(name: str, value: Any) -> bool:
    """True or False."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def retry_kwargs(name: str, value: Any) -> dict[str, Any]:
    """``countdown`` and ``max_retries`` for automatic retries, each checked."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict such as {{'max_retries': 5}}, not {value!r}")
    unknown = sorted(str(key) for key in value if key not in RETRY_KWARGS)
    if unknown:
        raise TypeError(
            f"{name}: unknown key(s) {', '.join(unknown)}; known: {', '.join(RETRY_KWARGS)}"
        )
    checked: dict[str, Any] = {}
    if "countdown" in value:
        checked["countdown"] = seconds(f"{name}['countdown']", value["countdown"])
    if "max_retries" in value:
        checked["max_retries"] = max_retries(f"{name}['max_retries']", value["max_retries"])
    return checked


#: Every run option with the check its values pass.
RUN_OPTIONS: dict[str, Callable[[str, Any], Any]] = {
    "autoretry_for": exception_classes,
    "dont_autoretry_for": exception_classes,
    "retry_kwargs": retry_kwargs,
    "max_retries": max_retries,
    "default_retry_delay": seconds,
    "retry_backoff": retry_backoff,
    "retry_backoff_max": seconds,
    "retry_jitter": flag,
    "time_limit": time_limit,
    "soft_time_limit": time_limit,
}

#: The ``app.conf`` key each option falls back to.
CONF_KEYS = {option: f"task_{option}" for option in RUN_OPTIONS}


def _declared(cls: type, root: type, option: str) -> tuple[bool, Any]:
    """The option as a class attribute of ``cls`` or a base below ``root``."""
    for klass in cls.__mro__:
        if klass is root:
            break
        if option in vars(klass):
            return True, vars(klass)[option]
    return False, None


def configured(option: str, root: type, conf: Any) -> Any:
    """``option`` as ``conf`` (an ``app.conf``, or any mapping of settings; None:
    none) sets it under ``task_<option>``, else ``root``'s default; checked."""
    check = RUN_OPTIONS[option]
    getter = getattr(conf, "get", None)
    value = None if getter is None else getter(CONF_KEYS[option])
    if value is not None:
        return check(f"app.conf {CONF_KEYS[option]}", value)
    return check(f"{root.__name__}.{option}", getattr(root, option))


def follows_conf(cls: type, root: type, options: Mapping[str, Any]) -> tuple[str, ...]:
    """The run options a task of class ``cls`` takes from ``app.conf`` (or ``root``'s
    defaults): those given neither in ``options`` nor as a class attribute."""
    return tuple(
        option
        for option in RUN_OPTIONS
        if option not in options and not _declared(cls, root, option)[0]
    )


def resolve(cls: type, root: type, app: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """Every run option of a task of class ``cls`` (a subclass of ``root``, whose
    attributes are the defaults), checked; raises ``TypeError``/``ValueError``
    naming the option, the class attribute or the ``app.conf`` key. ``app`` may be
    None: the options are then checked against ``root``'s defaults."""
    resolved: dict[str, Any] = {}
    conf = getattr(app, "conf", None)
    for option, check in RUN_OPTIONS.items():
        if option in options:
            resolved[option] = check(option, options[option])
            continue
        found, value = _declared(cls, root, option)
        if found:
            resolved[option] = check(f"{cls.__name__}.{option}", value)
            continue
        resolved[option] = configured(option, root, conf)
    return resolved
