"""Signals: your own functions called as tasks run and as the worker starts and stops.

The names and keyword arguments are Celery's, so receivers written for Celery keep
working::

    from celeriac.signals import task_failure

    @task_failure.connect
    def report(sender=None, task_id=None, exception=None, **kwargs):
        alerting.send(f"{sender.name} {task_id} failed: {exception}")

A receiver gets ``sender`` and the signal's keyword arguments; accept ``**kwargs`` so
arguments added later do not break it. A receiver that raises is logged and
skipped: it never changes a task's outcome or stops the worker. ``connect(...,
sender=X)`` limits a receiver to one sender: a task object or a task name for the
task signals, the worker or its name for the worker signals.

Where they are sent (see docs/worker.md, "Signals"): ``task_prerun``,
``task_postrun`` and ``task_failure`` in the worker's main process around every
attempt, whatever the pool (the last two once the worker has decided how the
attempt ends); ``worker_ready`` once the worker consumes its queues and
``worker_shutdown`` once it has stopped taking tasks; ``worker_process_init`` in
each ``--pool processes`` child once it has imported the app. The worker sends
them with ``asend``: a plain ``def`` receiver runs on a thread of its own, so a
slow one never stalls the worker, an ``async def`` one is awaited on its loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from celeriac.exceptions import ExceptionInfo

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class _Receiver:
    function: Callable[..., Any]
    # Only this sender (an object, or a name matched against the sender's ``name``).
    sender: Any
    # What makes two connections the same: dispatch_uid, else function and sender.
    key: Hashable


def _matches(wanted: Any, sender: Any) -> bool:
    if wanted is None or wanted is sender:
        return True
    return _name_of(wanted) is not None and _name_of(wanted) == _name_of(sender)


def _name_of(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else None


class Signal:
    """A named event that receivers connect to; senders call ``send`` (or ``asend``)."""

    def __init__(self, name: str, providing_args: tuple[str, ...] = ()) -> None:
        self.name = name
        # The keyword arguments receivers get besides ``sender`` (documentation only).
        self.providing_args = providing_args
        self._receivers: tuple[_Receiver, ...] = ()

    def __repr__(self) -> str:
        return f"<Signal {self.name}: {len(self._receivers)} receiver(s)>"

    @property
    def receivers(self) -> tuple[Callable[..., Any], ...]:
        """The connected functions, in the order they are called."""
        return tuple(r.function for r in self._receivers)

    def has_receivers(self) -> bool:
        """True when anything is connected (senders skip the work of sending otherwise)."""
        return bool(self._receivers)

    @overload
    def connect(
        self,
        receiver: F,
        *,
        sender: Any = None,
        weak: bool = False,
        dispatch_uid: Hashable | None = None,
    ) -> F: ...
    @overload
    def connect(
        self,
        receiver: None = None,
        *,
        sender: Any = None,
        weak: bool = False,
        dispatch_uid: Hashable | None = None,
    ) -> Callable[[F], F]: ...
    def connect(
        self,
        receiver: F | None = None,
        *,
        sender: Any = None,
        weak: bool = False,
        dispatch_uid: Hashable | None = None,
    ) -> F | Callable[[F], F]:
        """Call ``receiver`` whenever the signal is sent (by ``sender`` only, if given).

        Works as ``sig.connect(fn)``, as ``@sig.connect`` and as
        ``@sig.connect(sender=...)``; returns the receiver unchanged. Connecting the
        same function and sender (or the same ``dispatch_uid``) again changes nothing.
        Receivers are always held by a strong reference: ``weak`` is accepted for
        Celery's signature and has no effect.
        """
        del weak  # receivers are never dropped behind the caller's back

        def register(function: F) -> F:
            if not callable(function):
                raise TypeError(f"{self.name}.connect: receiver {function!r} is not callable")
            key = (
                dispatch_uid
                if dispatch_uid is not None
                else (_identity(function), _sender_key(sender))
            )
            if all(r.key != key for r in self._receivers):
                self._receivers = (*self._receivers, _Receiver(function, sender, key))
            return function

        return register if receiver is None else register(receiver)

    def disconnect(
        self,
        receiver: Callable[..., Any] | None = None,
        *,
        sender: Any = None,
        dispatch_uid: Hashable | None = None,
    ) -> bool:
        """Stop calling ``receiver`` (for ``sender``), or the one connected with
        ``dispatch_uid``; True when something was connected."""
        if dispatch_uid is not None:
            key: Hashable = dispatch_uid
        elif receiver is not None:
            key = (_identity(receiver), _sender_key(sender))
        else:
            raise TypeError(f"{self.name}.disconnect needs a receiver or a dispatch_uid")
        kept = tuple(r for r in self._receivers if r.key != key)
        found = len(kept) != len(self._receivers)
        self._receivers = kept
        return found

    def _live(self, sender: Any) -> tuple[_Receiver, ...]:
        return tuple(r for r in self._receivers if _matches(r.sender, sender))

    def send(self, sender: Any, **named: Any) -> list[tuple[Callable[..., Any], Any]]:
        """Call every matching receiver with ``sender`` and ``named``.

        Returns ``(receiver, response)`` pairs; a receiver that raised is logged and
        its response is the exception. An ``async def`` receiver is not awaited here
        (the worker uses ``asend``): it is logged and its response is None.
        """
        responses: list[tuple[Callable[..., Any], Any]] = []
        for receiver in self._live(sender):
            response = self._call(receiver, sender, named)
            if inspect.isawaitable(response):
                _discard(response)
                log.warning(
                    "signal %s: receiver %s is async; it runs only where the signal is "
                    "awaited (asend), not from send()", self.name, _describe(receiver.function),
                )  # fmt: skip
                response = None
            responses.append((receiver.function, response))
        return responses

    async def asend(self, sender: Any, **named: Any) -> list[tuple[Callable[..., Any], Any]]:
        """``send`` for async code: an ``async def`` receiver is awaited, a plain one
        runs on a thread of its own (``asyncio.to_thread``), so one that blocks (a
        database or HTTP call) does not stall the loop. Receivers run one after another.
        """
        responses: list[tuple[Callable[..., Any], Any]] = []
        for receiver in self._live(sender):
            if inspect.iscoroutinefunction(receiver.function):
                response = self._call(receiver, sender, named)
            else:  # the thread gets a copy of the context: log lines still name the task
                response = await asyncio.to_thread(self._call, receiver, sender, named)
            if inspect.isawaitable(response):  # e.g. an object whose __call__ is async
                try:
                    response = await response
                except Exception as exc:
                    response = self._failed(receiver, exc)
            responses.append((receiver.function, response))
        return responses

    def _call(self, receiver: _Receiver, sender: Any, named: dict[str, Any]) -> Any:
        try:
            return receiver.function(signal=self, sender=sender, **named)
        except Exception as exc:
            return self._failed(receiver, exc)

    def _failed(self, receiver: _Receiver, exc: Exception) -> Exception:
        log.error("signal %s: receiver %s raised", self.name, _describe(receiver.function),
                  exc_info=exc)  # fmt: skip
        return exc


def _identity(function: Callable[..., Any]) -> Hashable:
    """Bound methods are made anew on each attribute access: key them by object and function."""
    owner = getattr(function, "__self__", None)
    inner = getattr(function, "__func__", None)
    if owner is not None and inner is not None:
        return (id(owner), id(inner))
    return id(function)


def _sender_key(sender: Any) -> Hashable:
    """A task and its name filter the same; other senders are told apart by identity."""
    name = _name_of(sender)
    return ("name", name) if name is not None else ("object", id(sender))


def _describe(function: Callable[..., Any]) -> str:
    module = getattr(function, "__module__", None) or "?"
    return f"{module}.{getattr(function, '__qualname__', repr(function))}"


def _discard(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()  # a coroutine never awaited would warn at garbage collection


task_prerun = Signal("task_prerun", ("task_id", "task", "args", "kwargs"))
"""Before a task's attempt runs. ``sender`` is the task."""

task_postrun = Signal("task_postrun", ("task_id", "task", "args", "kwargs", "retval", "state"))
"""After an attempt ends, however it ended, once the worker has stored the outcome.
``retval`` is the return value (the exception for a failure); ``state`` is what the
worker decided: SUCCESS, RETRY (it will run again: ``self.retry`` or
``autoretry_for`` with retries left), FAILURE (failed for good, retries used up
included) or REVOKED (stopped by ``revoke(terminate=True)``)."""

task_failure = Signal(
    "task_failure", ("task_id", "exception", "args", "kwargs", "traceback", "einfo")
)
"""After an attempt failed for good: it raised and will not be retried (not asked
for, or out of retries), hit its hard time limit, or returned a result that cannot be
stored. ``traceback`` is the formatted traceback text; ``einfo`` (an
``ExceptionInfo``) has ``exception``, ``type`` and ``traceback``."""

worker_ready = Signal("worker_ready")
"""The worker consumes its queues. ``sender`` is the worker (``sender.name``)."""

worker_shutdown = Signal("worker_shutdown")
"""The worker has stopped taking tasks and is about to exit. ``sender`` is the worker."""

worker_process_init = Signal("worker_process_init")
"""In each ``--pool processes`` child, once it has imported the app. ``sender`` is None."""

__all__ = [
    "ExceptionInfo",
    "Signal",
    "task_failure",
    "task_postrun",
    "task_prerun",
    "worker_process_init",
    "worker_ready",
    "worker_shutdown",
]
