"""Rebuilding a task's exception in the caller from its result record (no server)."""

from __future__ import annotations

import decimal
import json
import pickle
import sys
import traceback
import types
from typing import Any

import pytest

from celeriac import remoteerrors
from celeriac.async_result import exception_of, outcome
from celeriac.exceptions import TaskError, TaskRevokedError, TimeLimitExceeded
from celeriac.protocol.envelope import ResultRecord
from celeriac.protocol.states import TaskState
from celeriac.remoteerrors import DEFAULT_EXCEPTION_MODULES, is_allowed, message_of, rebuild

TRACE = 'Traceback (most recent call last):\n  File "shop/tasks.py", line 3\nValueError: boom\n'


def build(exc_type: str | None, exc_module: str | None, error: str, **kw: Any) -> TaskError:
    return rebuild(
        "t-1", exc_type=exc_type, exc_module=exc_module, error=error, traceback=TRACE, **kw
    )


@pytest.mark.parametrize(
    ("exc_type", "exc_module", "error", "expected"),
    [
        # Allowed: an instance of the original class (and of TaskError).
        ("ValueError", "builtins", "ValueError: boom", (ValueError, "boom")),
        ("KeyError", "builtins", "KeyError: 'sku'", (KeyError, "'sku'")),
        ("ZeroDivisionError", "builtins", "ZeroDivisionError: division by zero",
         (ArithmeticError, "division by zero")),
        ("FileNotFoundError", "builtins", "FileNotFoundError: gone", (OSError, "gone")),
        ("RuntimeError", "builtins", "RuntimeError", (RuntimeError, "")),
        ("TimeLimitExceeded", "celeriac.exceptions", "TimeLimitExceeded: over 5 s",
         (TimeLimitExceeded, "over 5 s")),
        ("InvalidOperation", "decimal", "InvalidOperation: bad amount",
         (decimal.InvalidOperation, "bad amount")),
        # A message that is not "Type: ..." (a chain step that never ran) is kept whole.
        ("ValueError", "builtins", "not run: earlier chain step a failed: ValueError: x",
         (ValueError, "not run: earlier chain step a failed: ValueError: x")),
    ],
)  # fmt: skip
def test_allowed_types_come_back_as_themselves(
    exc_type: str, exc_module: str, error: str, expected: tuple[type, str]
) -> None:
    catch, text = expected
    error_obj = build(exc_type, exc_module, error, modules=(*DEFAULT_EXCEPTION_MODULES, "decimal"))
    assert isinstance(error_obj, catch) and isinstance(error_obj, TaskError)
    assert type(error_obj).__name__ == exc_type and str(error_obj) == text
    assert (error_obj.task_id, error_obj.exc_type, error_obj.exc_module) == (
        "t-1",
        exc_type,
        exc_module,
    )
    assert error_obj.traceback == TRACE
    assert "raised by task t-1 on a worker" in error_obj.__notes__[0]


@pytest.mark.parametrize(
    ("exc_type", "exc_module", "why"),
    [
        ("InvalidOperation", "decimal", "module not on the list"),
        ("ValueError", None, "an older worker did not record the module"),
        ("SystemExit", "builtins", "not an Exception: must not stop the caller"),
        ("KeyboardInterrupt", "builtins", "not an Exception"),
        ("UnicodeDecodeError", "builtins", "its constructor wants five arguments"),
        ("JSONDecodeError", "json.decoder", "not allowed (and wants three arguments)"),
        ("NoSuchError", "builtins", "no such class in the module"),
        ("print", "builtins", "not a class"),
        ("TaskError", "celeriac.exceptions", "its constructor wants the task id"),
    ],
)
def test_other_types_become_a_task_error_named_after_them(
    exc_type: str, exc_module: str | None, why: str
) -> None:
    error_obj = build(exc_type, exc_module, f"{exc_type}: it broke")
    assert type(error_obj).__name__ == exc_type, why
    assert type(error_obj).__module__ == "celeriac.remoteerrors"
    assert isinstance(error_obj, TaskError) and not isinstance(error_obj, ValueError)
    assert str(error_obj) == f"task t-1 failed: {exc_type}: it broke"
    assert (error_obj.exc_type, error_obj.exc_module, error_obj.traceback) == (
        exc_type,
        exc_module,
        TRACE,
    )


def test_no_type_at_all_is_a_plain_task_error() -> None:
    error_obj = build(None, None, "worker lost")
    assert type(error_obj) is TaskError and str(error_obj) == "task t-1 failed: Error: worker lost"


def test_a_module_off_the_list_is_never_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "xml.dom.minidom", raising=False)
    error_obj = build("Node", "xml.dom.minidom", "Node: x")
    assert isinstance(error_obj, TaskError) and "xml.dom.minidom" not in sys.modules


def test_the_users_own_module_once_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    errors = types.ModuleType("shop_errors_example")

    class OutOfStockError(Exception):
        def __init__(self, message: str) -> None:
            super().__init__(message)
            self.detail = message.upper()

    OutOfStockError.__module__ = errors.__name__
    errors.OutOfStockError = OutOfStockError  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, errors.__name__, errors)
    error_obj = build(
        "OutOfStockError",
        errors.__name__,
        "OutOfStockError: sku 7",
        modules=["shop_errors_example"],
    )
    assert isinstance(error_obj, OutOfStockError) and error_obj.detail == "SKU 7"
    # A package entry allows the modules inside it too.
    assert is_allowed("shop.errors.stock", ["shop"]) and not is_allowed("shopping", ["shop"])


class StockError(Exception):
    """An exception of a module the tests put into sys.modules."""


class _LazyModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"module __getattr__ ran for {name}")


def _loaded(name: str, cls: type | None = None, module_type: type = types.ModuleType) -> Any:
    module = module_type(name)
    if cls is not None:
        setattr(module, cls.__name__, cls)
    return module


@pytest.mark.parametrize(
    ("record", "allowed", "loaded", "found"),
    [
        # Allowed and already imported by this process: the class itself.
        (("shop_errors_t", "StockError"), ["shop_errors_t"], True, StockError),
        (("builtins", "ValueError"), DEFAULT_EXCEPTION_MODULES, True, ValueError),
        # A module inside an allowed package, imported: allowed (docs/sdk.md).
        (("shop_t.errors", "StockError"), ["shop_t"], True, StockError),
        # Allowed but not imported here: never imported for it, so not found.
        (("shop_errors_t", "StockError"), ["shop_errors_t"], False, None),
        # Imported, but not allowed: a name that only starts like an allowed one,
        # a parent package of an allowed module, or off the list altogether.
        (("shop_tx", "StockError"), ["shop_t"], True, None),
        (("shop_t", "StockError"), ["shop_t.errors"], True, None),
        (("shop_errors_t", "StockError"), DEFAULT_EXCEPTION_MODULES, True, None),
        # Not a class in the module's own namespace: no module __getattr__ runs.
        (("shop_lazy_t", "StockError"), ["shop_lazy_t"], "lazy", None),
        (("shop_errors_t", "Missing"), ["shop_errors_t"], True, None),
        (("shop_errors_t", "a.b"), ["shop_errors_t"], True, None),
        ((None, "StockError"), ["shop_errors_t"], True, None),
    ],
)
def test_find_class_only_looks_among_imported_allowed_modules(
    monkeypatch: pytest.MonkeyPatch,
    record: tuple[str | None, str],
    allowed: list[str],
    loaded: bool | str,
    found: type | None,
) -> None:
    module, name = record
    fakes = ("shop_errors_t", "shop_t", "shop_t.errors", "shop_tx", "shop_lazy_t")
    for fake in fakes:
        monkeypatch.delitem(sys.modules, fake, raising=False)
    if module in fakes and loaded:
        lazy = loaded == "lazy"
        cls = None if lazy else StockError
        monkeypatch.setitem(
            sys.modules, module, _loaded(module, cls, _LazyModule if lazy else types.ModuleType)
        )
        if module == "shop_t.errors":
            monkeypatch.setitem(sys.modules, "shop_t", _loaded("shop_t", StockError))
        if module == "shop_t":
            monkeypatch.setitem(sys.modules, "shop_t.errors", _loaded("shop_t.errors"))
    assert remoteerrors.find_class(module, name, allowed) is found


def test_an_allowed_module_is_not_imported_for_a_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """The record's exc_module comes from the results bucket: importing it would run
    whatever module a writer to that bucket names, inside an allowed package too."""
    monkeypatch.delitem(sys.modules, "xml.dom.minidom", raising=False)
    error_obj = build("Node", "xml.dom.minidom", "Node: x", modules=["xml"])
    assert type(error_obj).__module__ == "celeriac.remoteerrors"
    assert "xml.dom.minidom" not in sys.modules


def test_rebuilt_errors_print_and_pickle_as_the_original() -> None:
    error_obj = build("ValueError", "builtins", "ValueError: boom")
    assert repr(error_obj) == "ValueError('boom')"
    copy = pickle.loads(pickle.dumps(error_obj))
    assert type(copy) is ValueError and copy.args == ("boom",)
    try:
        raise error_obj
    except ValueError:
        printed = traceback.format_exc()
    assert "ValueError: boom" in printed and 'File "shop/tasks.py", line 3' in printed
    assert type(build("ValueError", "builtins", "ValueError: x")) is type(error_obj)  # cached


@pytest.mark.parametrize(
    ("exc_type", "error", "message"),
    [
        ("ValueError", "ValueError: boom", "boom"),
        ("ValueError", "ValueError", ""),
        ("ValueError", "chord x failed: ValueError: y", "chord x failed: ValueError: y"),
        (None, "lost", "lost"),
        ("ValueError", None, ""),
    ],
)  # fmt: skip
def test_message_of(exc_type: str | None, error: str | None, message: str) -> None:
    assert message_of(exc_type, error) == message


def test_outcome_and_info_of_records() -> None:
    failure = ResultRecord(
        state=TaskState.FAILURE,
        error="ValueError: boom",
        exc_type="ValueError",
        exc_module="builtins",
    )
    with pytest.raises(ValueError, match="boom"):
        outcome("t-2", failure, propagate=True)
    assert isinstance(outcome("t-2", failure, propagate=False), ValueError)
    revoked = ResultRecord(state=TaskState.REVOKED, error="stop")
    with pytest.raises(TaskRevokedError, match="t-2 was revoked: stop"):
        outcome("t-2", revoked, propagate=True)
    assert outcome("t-2", revoked, propagate=False) is None
    assert isinstance(exception_of("t-2", revoked), TaskRevokedError)
    json_error = ResultRecord(
        state=TaskState.FAILURE, error="JSONDecodeError: x", exc_type="JSONDecodeError",
        exc_module="json.decoder",
    )  # fmt: skip
    rebuilt = exception_of("t-2", json_error, [*DEFAULT_EXCEPTION_MODULES, "json"])
    assert not isinstance(rebuilt, json.JSONDecodeError) and isinstance(rebuilt, TaskError)


@pytest.mark.parametrize("bad", ["shop.errors", [1], ["shop errors"], None])
def test_module_lists_are_checked(bad: Any) -> None:
    with pytest.raises(ValueError, match="exception_modules"):
        remoteerrors.check_modules(bad, "exception_modules")
