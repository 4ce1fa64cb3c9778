"""The exception behind a failed attempt, as the task hooks and signals get it.

The worker usually holds the exception the task raised (``ErrorInfo.exception``):
it ran in this process, or a ``--pool processes`` child sent back a pickled copy.
When it does not (the copy failed to pickle, the worker recorded the error itself,
such as a hard time limit, or the outcome was kept across a failed store), the
exception is rebuilt from the record as a caller's ``get()`` would rebuild it
(``celeriac.remoteerrors``, with the app's ``result_exception_modules``), so hooks,
signal receivers and callers see the same type.
"""

from __future__ import annotations

from collections.abc import Iterable

from celeriac import exceptions
from celeriac.exceptions import ExceptionInfo
from celeriac.remoteerrors import DEFAULT_EXCEPTION_MODULES, rebuild
from celeriac.worker_runtime.execution import ErrorInfo


def exception_of(
    task_id: str, error: ErrorInfo, modules: Iterable[str] = DEFAULT_EXCEPTION_MODULES
) -> BaseException:
    """What the attempt raised: the exception itself when the worker has it, else a
    stand-in rebuilt from ``error`` (see the module docstring)."""
    if error.exception is not None:
        return error.exception
    module = error.exc_module
    if module is None:
        # The worker's own errors carry no module: they are Celeriac's or Python's.
        module = exceptions.__name__ if hasattr(exceptions, error.exc_type) else "builtins"
    return rebuild(
        task_id,
        exc_type=error.exc_type,
        exc_module=module,
        error=error.error,
        traceback=error.traceback,
        modules=modules,
    )


def einfo_of(
    task_id: str, error: ErrorInfo, modules: Iterable[str] = DEFAULT_EXCEPTION_MODULES
) -> ExceptionInfo:
    """The ``einfo`` of the failure hooks and of ``task_failure``."""
    return ExceptionInfo(
        exception=exception_of(task_id, error, modules),
        traceback=error.traceback or f"{error.error}\n",
    )
