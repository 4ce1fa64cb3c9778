"""What a processes-pool child sends back: whatever part of it cannot be unpickled in
the worker, the attempt still has an outcome (the task is never run again for it)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from celeriac.worker_runtime.childreplies import pack, unpack, unsendable
from celeriac.worker_runtime.execution import ErrorInfo


def _refuse(text: str) -> Any:
    raise ModuleNotFoundError(f"No module named {text!r}")


class LoadsNowhereError(Exception):
    """Pickles, but cannot be loaded (as a class the worker cannot import)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _refuse, ("gone",)


class LoadsNowhere:
    def __reduce__(self) -> tuple[Any, ...]:
        return _refuse, ("gone",)


def error(exc: BaseException | None) -> ErrorInfo:
    return ErrorInfo("SomeError", "went wrong", "Traceback ...", exc_module="m", exception=exc)


@pytest.mark.parametrize(
    ("kind", "payload", "value", "exc_type", "message", "exception"),
    [
        ("ok", {"a": [1, 2]}, {"a": [1, 2]}, None, None, None),
        ("ok", LoadsNowhere(), None, "PicklingError", "result cannot be read back", None),
        ("error", error(ValueError("bad")), None, "SomeError", "went wrong", ValueError),
        ("error", error(LoadsNowhereError("x")), None, "SomeError", "went wrong", None),
        ("error", error(None), None, "SomeError", "went wrong", None),
    ],
)
def test_a_reply_becomes_an_outcome(
    *,
    kind: str,
    payload: Any,
    value: Any,
    exc_type: str | None,
    message: str | None,
    exception: type[BaseException] | None,
) -> None:
    outcome = unpack(pack(kind, payload))
    assert outcome.value == value
    if exc_type is None:
        assert outcome.error is None
        return
    assert outcome.error is not None
    assert outcome.error.exc_type == exc_type and message in outcome.error.message
    if exception is None:
        assert outcome.error.exception is None
    else:
        assert isinstance(outcome.error.exception, exception)
        assert outcome.error.traceback == "Traceback ..." and outcome.error.exc_module == "m"


def test_an_exception_that_cannot_be_pickled_is_left_out() -> None:
    class LocalError(Exception):  # a local class cannot be pickled
        pass

    _, info, pickled = pack("error", error(LocalError("here")))
    assert pickled is None and info is not None and info.exception is None
    assert unpack(("error", info, pickled)).error == error(None)


def test_a_value_that_cannot_be_pickled_raises_for_the_child_to_say_so() -> None:
    with pytest.raises(TypeError) as raised:
        pack("ok", threading.Lock())
    outcome = unpack(unsendable(raised.value))
    assert outcome.error is not None and outcome.error.exc_type == "PicklingError"
    assert outcome.error.message.startswith("result cannot be sent back: ")
