"""celeriac.signals: connecting, filtering by sender, sending, and receivers that fail.

Pure: no server. What the worker sends, and when, is in tests/worker/test_signals_worker.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
import threading
from typing import Any

import pytest

from celeriac import signals
from celeriac.app import Celeriac
from celeriac.exceptions import ExceptionInfo
from celeriac.revocation import terminate_signal
from celeriac.signals import Signal


class Recorder:
    """A receiver that keeps what it was called with."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **named: Any) -> str:
        self.calls.append(named)
        return "seen"


def test_receivers_get_sender_signal_and_named_arguments() -> None:
    sig = Signal("demo")
    seen = Recorder()
    sig.connect(seen)
    responses = sig.send(sender="me", task_id="t1", args=(1, 2))
    assert responses == [(seen, "seen")]
    assert seen.calls == [{"signal": sig, "sender": "me", "task_id": "t1", "args": (1, 2)}]


def test_connect_works_as_decorator_with_and_without_arguments() -> None:
    sig = Signal("demo")
    calls: list[str] = []

    @sig.connect
    def plain(**named: Any) -> None:
        calls.append("plain")

    @sig.connect(sender="only-this")
    def filtered(**named: Any) -> None:
        calls.append("filtered")

    assert plain.__name__ == "plain" and filtered.__name__ == "filtered"  # returned unchanged
    sig.send(sender="someone")
    sig.send(sender="only-this")
    assert calls == ["plain", "plain", "filtered"]


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


@pytest.mark.parametrize(
    ("wanted", "sender", "called"),
    [
        (None, "anything", True),
        ("w.add", "w.add", True),
        ("w.add", "w.mul", False),
        ("w.add", _Named("w.add"), True),  # a task name matches the task object
        ("w.add", _Named("w.mul"), False),
        ("w.add", None, False),
        ("worker-1", _Named("worker-1"), True),  # a worker's name matches the worker
    ],
)
def test_sender_filter(wanted: Any, sender: Any, called: bool) -> None:
    sig = Signal("demo")
    seen = Recorder()
    sig.connect(seen, sender=wanted)
    sig.send(sender=sender)
    assert bool(seen.calls) is called


def test_sender_filter_by_task_object_and_by_name() -> None:
    app = Celeriac("signals-tests", nats_url="nats://127.0.0.1:1")

    @app.task(name="s.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="s.mul")
    def mul(a: int, b: int) -> int:
        return a * b

    sig = Signal("demo")
    by_object, by_name = Recorder(), Recorder()
    sig.connect(by_object, sender=add)
    sig.connect(by_name, sender="s.add")
    sig.send(sender=add)
    sig.send(sender=mul)
    assert [c["sender"] for c in by_object.calls] == [add]
    assert [c["sender"] for c in by_name.calls] == [add]


def test_connecting_twice_calls_once_and_disconnect_removes() -> None:
    sig = Signal("demo")
    seen = Recorder()
    sig.connect(seen)
    sig.connect(seen)
    sig.connect(seen, sender="x")  # another sender: another connection
    assert len(sig.receivers) == 2
    sig.send(sender="y")
    assert len(seen.calls) == 1
    assert sig.disconnect(seen) is True
    assert sig.disconnect(seen) is False
    assert sig.disconnect(seen, sender="x") is True
    assert not sig.has_receivers()


def test_dispatch_uid_identifies_a_connection() -> None:
    sig = Signal("demo")
    first, second = Recorder(), Recorder()
    sig.connect(first, dispatch_uid="audit")
    sig.connect(second, dispatch_uid="audit")  # the same uid: not connected again
    sig.send(sender=None)
    assert (len(first.calls), len(second.calls)) == (1, 0)
    assert sig.disconnect(dispatch_uid="audit") is True
    assert sig.receivers == ()


def test_bound_methods_connect_once_and_disconnect() -> None:
    class Listener:
        def __init__(self) -> None:
            self.count = 0

        def on(self, **named: Any) -> None:
            self.count += 1

    sig = Signal("demo")
    listener = Listener()
    sig.connect(listener.on)
    sig.connect(listener.on)  # a new bound-method object each time, the same receiver
    sig.send(sender=None)
    assert listener.count == 1
    assert sig.disconnect(listener.on) is True


def test_weak_is_accepted_and_receivers_stay_connected() -> None:
    sig = Signal("demo")
    calls: list[int] = []
    sig.connect(lambda **named: calls.append(1), weak=True)
    sig.send(sender=None)
    assert calls == [1]


def test_bad_receivers_are_refused() -> None:
    sig = Signal("demo")
    with pytest.raises(TypeError, match="not callable"):
        sig.connect(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="receiver or a dispatch_uid"):
        sig.disconnect()


def test_a_raising_receiver_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sig = Signal("demo")
    after = Recorder()

    def broken(**named: Any) -> None:
        raise RuntimeError("receiver broken on purpose")

    sig.connect(broken)
    sig.connect(after)
    with caplog.at_level(logging.ERROR, logger="celeriac.signals"):
        responses = sig.send(sender=None)
    assert isinstance(responses[0][1], RuntimeError)
    assert responses[1] == (after, "seen")
    assert "signal demo: receiver" in caplog.text and "broken" in caplog.text
    assert "receiver broken on purpose" in caplog.text  # the traceback is logged


async def test_asend_awaits_async_receivers_and_logs_their_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sig = Signal("demo")
    order: list[str] = []

    async def slow(**named: Any) -> str:
        await asyncio.sleep(0)
        order.append("async")
        return "done"

    async def broken(**named: Any) -> None:
        await asyncio.sleep(0)
        raise ValueError("async receiver broken")

    sig.connect(slow)
    sig.connect(broken)
    sig.connect(lambda **named: order.append("sync"))
    with caplog.at_level(logging.ERROR, logger="celeriac.signals"):
        responses = await sig.asend(sender=None)
    assert order == ["async", "sync"]
    assert responses[0] == (slow, "done")
    assert isinstance(responses[1][1], ValueError)
    assert "async receiver broken" in caplog.text


async def test_asend_runs_plain_receivers_off_the_event_loop() -> None:
    sig = Signal("demo")
    loop_thread = threading.get_ident()
    unblocked = threading.Event()
    request = contextvars.ContextVar("request", default="-")
    seen: list[tuple[int, str]] = []

    def blocking(**named: Any) -> str:
        seen.append((threading.get_ident(), request.get()))
        # Only a loop left running can call unblocked.set: a stalled loop times out.
        return "unblocked" if unblocked.wait(timeout=10) else "the loop was stalled"

    class Awaited:
        async def __call__(self, **named: Any) -> str:
            return "awaited"

    awaited = Awaited()
    sig.connect(blocking)
    sig.connect(awaited)
    request.set("t-42")
    asyncio.get_running_loop().call_soon(unblocked.set)
    responses = await sig.asend(sender=None)
    assert responses == [(blocking, "unblocked"), (awaited, "awaited")]
    [(thread, seen_request)] = seen
    assert thread != loop_thread
    assert seen_request == "t-42"  # the caller's context: log lines still name the task


def test_einfo_is_the_one_exception_info_class() -> None:
    assert signals.ExceptionInfo is ExceptionInfo
    info = ExceptionInfo(exception=KeyError("sku"), traceback="Traceback ...\n")
    assert info.type is KeyError and str(info) == "Traceback ...\n"


def test_send_does_not_run_async_receivers_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    sig = Signal("demo")
    ran: list[int] = []

    async def later(**named: Any) -> None:
        ran.append(1)

    sig.connect(later)
    with caplog.at_level(logging.WARNING, logger="celeriac.signals"):
        assert sig.send(sender=None) == [(later, None)]
    assert ran == []
    assert "is async" in caplog.text


def test_the_celery_signals_exist_with_their_arguments() -> None:
    assert signals.task_prerun.providing_args == ("task_id", "task", "args", "kwargs")
    assert signals.task_postrun.providing_args[-2:] == ("retval", "state")
    assert signals.task_failure.providing_args == (
        "task_id", "exception", "args", "kwargs", "traceback", "einfo",
    )  # fmt: skip
    for sig in (signals.worker_ready, signals.worker_shutdown, signals.worker_process_init):
        assert isinstance(sig, Signal)
    assert "task_prerun" in repr(signals.task_prerun)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "SIGTERM"),
        ("SIGTERM", "SIGTERM"),
        ("TERM", "SIGTERM"),
        ("sigkill", "SIGKILL"),
        ("KILL", "SIGKILL"),
        (" SIGKILL ", "SIGKILL"),
        (signal.SIGKILL, "SIGKILL"),
        (int(signal.SIGTERM), "SIGTERM"),
    ],
)
def test_terminate_signal_spellings(given: Any, expected: str) -> None:
    assert terminate_signal(given) == expected


@pytest.mark.parametrize("given", ["SIGINT", "HUP", "", 2, 999, 1.5, True])
def test_terminate_signal_refuses_others(given: Any) -> None:
    with pytest.raises(ValueError, match="signal"):
        terminate_signal(given)


async def test_revoke_refuses_a_bad_signal_before_touching_nats() -> None:
    app = Celeriac("signals-tests", nats_url="nats://127.0.0.1:1")  # nothing listens there
    result = app.AsyncResult("some-task")
    with pytest.raises(ValueError, match="signal='SIGINT' is not supported"):
        await result.arevoke(terminate=True, signal="SIGINT")
    with pytest.raises(ValueError, match="SIGKILL"):
        await result.arevoke(signal="SIGHUP")  # checked even without terminate
    await app.aclose()
