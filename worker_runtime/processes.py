"""``--pool processes``: sync tasks run in child processes, one attempt per child at a time.

The parent keeps the NATS connection and all message handling; a child only
imports the app (``-A``), runs the functions it is sent over a pipe and sends back
the value or the error as data. At the soft limit the parent sends the child
SIGUSR1, which raises ``SoftTimeLimitExceeded`` inside the task; at the hard limit
it kills the child and starts a new one. ``--max-tasks-per-child`` replaces a
child after that many attempts (a cure for leaks). Async tasks run on the parent's
event loop: they wait on I/O and gain nothing from a process.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from celeriac.worker_runtime.childreplies import Reply, unpack
from celeriac.worker_runtime.coroutines import run_coroutine
from celeriac.worker_runtime.execution import Call, ErrorInfo, Outcome, time_limit_error
from celeriac.worker_runtime.logs import LogSetup, current_task, log_setup

if TYPE_CHECKING:
    from celeriac.task import Task

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# After a terminating SIGTERM, how long a child has before it gets SIGKILL.
TERMINATE_GRACE = 5.0


class _Child:
    """One child process and the parent's end of its pipe."""

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.attempts = 0
        # Set once the child has imported the app and said so; time limits start after.
        self.ready = False
        # Signalled by revoke(terminate=True): never given another task.
        self.terminated = False

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class ProcessPool:
    """A fixed number of child processes; a killed or retired child is replaced at once."""

    def __init__(
        self, app_spec: str, size: int, max_tasks_per_child: int | None, loglevel: str
    ) -> None:
        self._app_spec = app_spec
        self._size = size
        self._max_tasks = max_tasks_per_child
        self._loglevel = loglevel
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: asyncio.Queue[_Child] = asyncio.Queue()
        self._children: set[_Child] = set()
        self._stopping = False
        # The child running each task id, for revoke(terminate=True).
        self._busy: dict[str, _Child] = {}

    async def start(self) -> None:
        """Start every child (they import the app in parallel)."""
        for _ in range(self._size):
            self._idle.put_nowait(self._spawn())
        log.info("process pool: %d children started", self._size)

    def _spawn(self) -> _Child:
        parent_end, child_end = self._ctx.Pipe()
        process = self._ctx.Process(
            target=child_main,
            # The parent's log format and worker name, with the level given here.
            args=(self._app_spec, child_end, replace(log_setup(), level=self._loglevel)),
            name=f"celeriac-child-{len(self._children) + 1}",
            daemon=True,
        )
        process.start()
        child_end.close()
        child = _Child(process, parent_end)
        self._children.add(child)
        return child

    def _retire(self, child: _Child, replace: bool) -> None:
        self._children.discard(child)
        child.kill()
        if replace and not self._stopping:
            self._idle.put_nowait(self._spawn())

    async def stop(self) -> None:
        """Kill every child."""
        self._stopping = True
        for child in list(self._children):
            self._retire(child, replace=False)

    async def run(self, task: Task, call: Call) -> Outcome:
        """Run a sync task in an idle child (async tasks run on the loop)."""
        if task.is_async:
            return await run_coroutine(task, call)
        child = await self._idle.get()
        if not child.alive():
            self._retire(child, replace=True)
            child = await self._idle.get()
        started = time.monotonic()
        self._busy[call.task_id] = child
        try:
            outcome = await self._attempt(child, task, call)
        except BaseException:
            self._retire(child, replace=True)  # abandoned mid-task (the worker is stopping)
            raise
        finally:
            if self._busy.get(call.task_id) is child:
                del self._busy[call.task_id]
        outcome.duration = time.monotonic() - started
        return outcome

    def terminate(self, task_id: str, signum: signal.Signals) -> bool:
        """Send ``signum`` to the child running ``task_id``; False when none does.

        After SIGTERM the child gets SIGKILL if still alive ``TERMINATE_GRACE`` later;
        either way it is replaced once its attempt has ended.
        """
        child = self._busy.get(task_id)
        pid = None if child is None else child.process.pid
        if child is None or pid is None or not child.alive():
            return False
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return False  # it just died: the attempt ends as lost
        child.terminated = True
        if signum is not signal.SIGKILL:
            asyncio.get_running_loop().call_later(TERMINATE_GRACE, _kill_if_alive, child)
        return True

    def _lost(self, child: _Child) -> Outcome:
        code = child.process.exitcode
        self._retire(child, replace=True)
        return Outcome(error=ErrorInfo("WorkerLostError", f"child process died (exit {code})"))

    async def _attempt(self, child: _Child, task: Task, call: Call) -> Outcome:
        if not child.ready:
            try:
                await _receive(child.conn)  # the child's "ready" after importing the app
            except (EOFError, OSError):
                return self._lost(child)
            child.ready = True
        try:
            # The task's log context goes along: the child's lines name the task too.
            child.conn.send((call, current_task.get()))
        except OSError:
            return self._lost(child)
        reply = asyncio.ensure_future(_receive(child.conn))
        soft, hard = call.soft_time_limit, call.time_limit
        waited = 0.0
        if soft is not None and (hard is None or soft < hard):
            await asyncio.wait({reply}, timeout=soft)
            if not reply.done() and child.process.pid is not None:
                os.kill(child.process.pid, signal.SIGUSR1)
            waited = soft
        await asyncio.wait({reply}, timeout=None if hard is None else hard - waited)
        if not reply.done():
            reply.cancel()
            assert hard is not None
            log.warning("task passed its hard time limit (%g s); killing its child process", hard)
            self._retire(child, replace=True)
            return Outcome(error=time_limit_error(task, hard))
        try:
            answer: Reply = reply.result()
        except (EOFError, OSError):
            return self._lost(child)
        self._return(child)
        # The task has run: a part of its reply that cannot be unpickled here is left
        # out, never a reason to run it again.
        return unpack(answer)

    def _return(self, child: _Child) -> None:
        child.attempts += 1
        if child.terminated or (self._max_tasks is not None and child.attempts >= self._max_tasks):
            self._retire(child, replace=True)
        else:
            self._idle.put_nowait(child)


def _kill_if_alive(child: _Child) -> None:
    if child.alive():
        log.warning("child process %s outlived SIGTERM by %g s: killing it",
                    child.process.pid, TERMINATE_GRACE)  # fmt: skip
        child.process.kill()


async def _receive(conn: Connection) -> Any:
    """Wait for the pipe to be readable without blocking the loop, then read one reply."""
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await readable
    finally:
        loop.remove_reader(fd)
    return conn.recv()


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass  # not Linux: the parent's shutdown still kills its children


def child_main(app_spec: str, conn: Connection, logging_setup: LogSetup) -> None:
    """Entry point of a child process: import the app, then run calls until EOF."""
    from celeriac.worker_runtime.childloop import serve

    _die_with_parent()
    # Ctrl-C reaches the whole process group; only the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    serve(app_spec, conn, logging_setup)
