"""Table tests of the exception hooks and signal receivers get for a failed attempt.

Pure: no server. The worker's own object when it has one, else a stand-in rebuilt
as a caller's ``get()`` would: the user's class when its module is allowed, never
a builtin that only shares its name.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from celeriac.exceptions import TaskError, TimeLimitExceeded
from celeriac.remoteerrors import DEFAULT_EXCEPTION_MODULES
from celeriac.worker_runtime.execution import ErrorInfo, error_info
from celeriac.worker_runtime.raised import einfo_of, exception_of

WITH_ASYNCIO = (*DEFAULT_EXCEPTION_MODULES, "asyncio")


@dataclass(frozen=True)
class Case:
    error: ErrorInfo
    modules: tuple[str, ...]
    kind: type[BaseException]  # what the exception must be an instance of
    name: str  # its class's name
    stand_in: bool  # rebuilt from the record, hence a TaskError too
    message: str  # str() of it


CASES = {
    "a user's TimeoutError from a module not allowed": Case(
        ErrorInfo("TimeoutError", "supplier too slow", exc_module="shop.errors"),
        DEFAULT_EXCEPTION_MODULES, TaskError, "TimeoutError", True,
        "task t-1 failed: TimeoutError: supplier too slow",
    ),
    "a user's class from an allowed module": Case(
        ErrorInfo("InvalidStateError", "not yet", exc_module="asyncio.exceptions"),
        WITH_ASYNCIO, asyncio.InvalidStateError, "InvalidStateError", True, "not yet",
    ),
    "Python's own class": Case(
        ErrorInfo("ValueError", "bad", exc_module="builtins"),
        DEFAULT_EXCEPTION_MODULES, ValueError, "ValueError", True, "bad",
    ),
    "a hard time limit the worker recorded": Case(
        ErrorInfo("TimeLimitExceeded", "interrupted before the task ran"),
        DEFAULT_EXCEPTION_MODULES, TimeLimitExceeded, "TimeLimitExceeded", True,
        "interrupted before the task ran",
    ),
    "a result the worker could not store": Case(
        ErrorInfo("TypeError", "the task's result (object) is not JSON-serializable"),
        DEFAULT_EXCEPTION_MODULES, TypeError, "TypeError", True,
        "the task's result (object) is not JSON-serializable",
    ),
    "an error no module has": Case(
        ErrorInfo("PoisonMessage", "delivered 5 times"),
        DEFAULT_EXCEPTION_MODULES, TaskError, "PoisonMessage", True,
        "task t-1 failed: PoisonMessage: delivered 5 times",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_stand_in_is_rebuilt_as_the_caller_would(case: Case) -> None:
    exc = exception_of("t-1", case.error, case.modules)
    assert isinstance(exc, case.kind)
    assert type(exc).__name__ == case.name
    assert isinstance(exc, TaskError) is case.stand_in
    assert str(exc) == case.message


def test_a_users_timeout_error_is_never_the_builtin() -> None:
    error = ErrorInfo("TimeoutError", "supplier too slow", exc_module="shop.errors")
    exc = exception_of("t-1", error)
    assert not isinstance(exc, TimeoutError)
    assert isinstance(exc, TaskError) and exc.exc_module == "shop.errors"


def test_the_exception_the_worker_holds_is_handed_over_as_it_is() -> None:
    class OutOfStockError(Exception):
        pass

    raised = OutOfStockError("sku-1")
    try:
        raise raised
    except OutOfStockError as exc:
        error = error_info(exc)
    assert exception_of("t-1", error) is raised
    einfo = einfo_of("t-1", error)
    assert einfo.exception is raised and einfo.type is OutOfStockError
    assert "OutOfStockError: sku-1" in einfo.traceback and str(einfo) == einfo.traceback


def test_einfo_without_a_traceback_shows_the_error() -> None:
    einfo = einfo_of("t-1", ErrorInfo("WorkerLostError", "child process died (exit -9)"))
    assert einfo.traceback == "WorkerLostError: child process died (exit -9)\n"
    assert einfo.type.__name__ == "WorkerLostError" and isinstance(einfo.exception, TaskError)
