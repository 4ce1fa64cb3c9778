"""A task's failure, rebuilt in the caller as an exception it can catch by type.

A worker records a failed task's exception as data (type name, module, message,
traceback), never pickled. The caller turns that back into an exception:

- The module is on the allow-list (``builtins`` and ``celeriac.exceptions`` always,
  plus the app's ``result_exception_modules``) and the class is an ``Exception``
  that takes the message as its one argument: the result is an instance of that
  very class (a subclass of it that is also a :class:`TaskError`), so ``except
  ValueError:`` around ``get()`` catches it, as does ``except TaskError:``.
- Otherwise: a ``TaskError`` subclass named after the remote type (``OutOfStock``),
  so the name shows in tracebacks and ``except TaskError:`` still catches it.

Either way the error carries ``task_id``, ``exc_type``, ``exc_module``, ``message``
and ``traceback`` (the worker's). No module is ever imported for it: the record's
fields come from the results bucket, so the class is looked up only among the
modules this process has already imported (as Celery does).
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, cast

from celeriac.exceptions import TaskError

# What every app accepts: Python's own exceptions and Celeriac's.
DEFAULT_EXCEPTION_MODULES: tuple[str, ...] = ("builtins", "celeriac.exceptions")

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def check_modules(value: Any, where: str) -> tuple[str, ...]:
    """``value`` as a tuple of module names; ``ValueError`` naming ``where`` otherwise."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(
            f"{where} must be a list of module names (e.g. ['shop.errors']), not {value!r}"
        )
    modules = tuple(value)
    for module in modules:
        if not isinstance(module, str) or not _MODULE_NAME.match(module):
            raise ValueError(f"{where}: {module!r} is not a module name such as 'shop.errors'")
    return modules


def is_allowed(module: str, modules: Iterable[str]) -> bool:
    """True when ``module`` is one of ``modules`` or a module inside one of them (a
    package): ``"shop"`` allows ``shop.errors``, not ``shopping``."""
    return any(module == m or module.startswith(f"{m}.") for m in modules)


def message_of(exc_type: str | None, error: str | None) -> str:
    """The exception's own message from a record's ``error`` (``"Type: message"``)."""
    if not error:
        return ""
    if exc_type and error == exc_type:
        return ""
    prefix = f"{exc_type}: "
    return error[len(prefix) :] if exc_type and error.startswith(prefix) else error


def find_class(module: str | None, name: str | None, modules: Iterable[str]) -> type | None:
    """The exception class ``module.name`` when the module is allowed and this process
    has imported it already, else None. Never imports: ``module`` is remote data.

    Only ``Exception`` subclasses qualify: a ``SystemExit`` or ``KeyboardInterrupt``
    from a task must not stop the process that reads its result.
    """
    if not module or not name or not name.isidentifier() or not is_allowed(module, modules):
        return None
    # The module's own namespace: no module __getattr__ runs for remote data either.
    namespace = getattr(sys.modules.get(module), "__dict__", None)
    found = namespace.get(name) if isinstance(namespace, dict) else None
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None


class _RemoteError(TaskError):
    """Makes a rebuilt exception a ``TaskError`` too, without TaskError's constructor:
    the original class's ``super().__init__(message)`` lands here."""

    def __init__(self, *args: Any) -> None:
        Exception.__init__(self, *args)


@lru_cache(maxsize=256)
def _rebuilt_class(original: type) -> type:
    """``original`` made a ``TaskError`` as well; shown and pickled as ``original``."""

    def reduce(self: BaseException) -> tuple[type, tuple[Any, ...]]:
        return (original, self.args)

    namespace = {
        "__module__": original.__module__,
        "__qualname__": original.__qualname__,
        "__doc__": original.__doc__,
        "__reduce__": reduce,
    }
    return type(original.__name__, (original, _RemoteError), namespace)


def _argument(original: type, message: str) -> Any:
    """What to construct ``original`` with: the message, except that a ``KeyError``'s
    message is the repr of its key (``'sku'``), which is turned back into the key."""
    if issubclass(original, KeyError):
        try:
            return ast.literal_eval(message)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return message
    return message


@lru_cache(maxsize=256)
def _fallback_class(name: str) -> type[TaskError]:
    """A ``TaskError`` subclass named after a remote type the caller does not import."""
    doc = f"A task failed with {name}, a type this process does not import."
    return type(name, (TaskError,), {"__module__": __name__, "__doc__": doc})


def _describe(error: BaseException, task_id: str, traceback: str | None) -> None:
    error.add_note(
        f"raised by task {task_id} on a worker"
        + (f"; its traceback there:\n{traceback.rstrip()}" if traceback else "")
    )


def rebuild(
    task_id: str,
    *,
    exc_type: str | None,
    exc_module: str | None,
    error: str | None,
    traceback: str | None,
    modules: Iterable[str] = DEFAULT_EXCEPTION_MODULES,
) -> TaskError:
    """The exception a FAILURE record stands for (see the module docstring); never raises."""
    message = message_of(exc_type, error)
    original = find_class(exc_module, exc_type, modules)
    if original is not None:
        try:
            cls = _rebuilt_class(original)
            rebuilt = cls(_argument(original, message)) if message else cls()
            rebuilt.task_id = task_id
            rebuilt.exc_type = exc_type
            rebuilt.exc_module = exc_module
            rebuilt.message = message
            rebuilt.traceback = traceback
        except Exception:  # constructors that want more than a message, read-only attributes
            pass
        else:
            _describe(rebuilt, task_id, traceback)
            return cast(TaskError, rebuilt)
    name = exc_type if exc_type and exc_type.isidentifier() else None
    fallback = (_fallback_class(name) if name else TaskError)(
        task_id, exc_type, error or "failed", traceback
    )
    fallback.exc_module = exc_module
    _describe(fallback, task_id, traceback)
    return fallback
