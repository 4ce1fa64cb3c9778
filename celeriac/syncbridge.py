"""Run the SDK's coroutines from plain synchronous code.

A Flask view, a script or a worker thread has no event loop. Each app owns one
background thread running its own loop (and through it, its own NATS connection);
blocking calls submit coroutines there and wait for the outcome. Calling a blocking
API on a thread that already runs a loop would stall that loop, so it is refused
with an error naming the async twin instead.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from celeriac.exceptions import SyncCallInEventLoopError

T = TypeVar("T")


def refuse_inside_event_loop(call: str, twin: str) -> None:
    """Raise when the calling thread runs an event loop (a blocking call would stall it)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise SyncCallInEventLoopError(
        f"{call} blocks and cannot be called from a running event loop; use `await {twin}` instead"
    )


def _submit(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> Future[T]:
    """Start ``coro`` as a task on ``loop`` from another thread; its outcome lands in the future.

    What ``asyncio.run_coroutine_threadsafe`` does, minus the two-way future chaining
    (the caller only waits, it never cancels): one cross-thread call per blocking submit.
    """
    future: Future[T] = Future()

    def finish(task: asyncio.Task[T]) -> None:
        if task.cancelled():
            future.cancel()
        elif (error := task.exception()) is not None:
            future.set_exception(error)
        else:
            future.set_result(task.result())

    def start() -> None:
        try:
            loop.create_task(coro).add_done_callback(finish)
        except BaseException as exc:  # e.g. the loop is closing: the caller gets the error
            coro.close()
            future.set_exception(exc)
            raise

    loop.call_soon_threadsafe(start)
    return future


class SyncBridge:
    """One daemon thread with an event loop; started on first use, stopped by ``close``."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The bridge's loop while it runs, else None."""
        return self._loop

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._pid != os.getpid():
                # A forked child inherits the loop object but not the thread running it.
                self._loop, self._thread, self._pid = None, None, os.getpid()
            if self._loop is not None:
                return self._loop
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=run, name=f"celeriac-sync-{self._name}", daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            return loop

    def run(
        self,
        factory: Callable[[], Coroutine[Any, Any, T]],
        *,
        call: str,
        twin: str,
        timeout: float | None = None,
    ) -> T:
        """Run the coroutine made by ``factory`` on the bridge's loop and return its result.

        ``call`` and ``twin`` name the blocking API and its async twin for the error
        raised when this is called from inside a running loop.
        """
        refuse_inside_event_loop(call, twin)
        loop = self._ensure_started()
        if threading.current_thread() is self._thread:
            raise SyncCallInEventLoopError(f"{call} called on the SDK's own loop; use {twin}")
        return _submit(loop, factory()).result(timeout)

    def close(self, shutdown: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        """Run ``shutdown`` on the loop (e.g. close connections), then stop the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop, self._thread = None, None
        if loop is None or thread is None:
            return
        try:
            if shutdown is not None and threading.current_thread() is not thread:
                asyncio.run_coroutine_threadsafe(shutdown(), loop).result(30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if threading.current_thread() is not thread:
                thread.join(30)
            if not loop.is_running():
                loop.close()
