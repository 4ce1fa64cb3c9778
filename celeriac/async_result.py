"""Handles on submitted work: ``AsyncResult`` for one task, ``GroupResult`` for a group.

Both read the results bucket through a ``Client``: the one given, an app's, or the
current app's (``AsyncResult(id)``, as in Celery). The blocking methods run on the
client's background loop, so they work from plain code; ``a``-prefixed twins run on
the caller's loop. A failure is rebuilt as its original exception type when the
app allows it (``celeriac.remoteerrors``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from celeriac import current
from celeriac.client import Client
from celeriac.exceptions import ResultTimeoutError, TaskRevokedError
from celeriac.protocol.envelope import ResultRecord
from celeriac.protocol.states import TaskState
from celeriac.remoteerrors import DEFAULT_EXCEPTION_MODULES, rebuild
from celeriac.revocation import terminate_signal

T = TypeVar("T")


def exception_of(
    task_id: str, record: ResultRecord, modules: Iterable[str] = DEFAULT_EXCEPTION_MODULES
) -> Exception:
    """The exception a FAILURE (or RETRY) ``record`` stands for; REVOKED gives
    ``TaskRevokedError``. Never raises."""
    if record.state is TaskState.REVOKED:
        return TaskRevokedError(f"task {task_id} was revoked: {record.error or 'revoked'}")
    return rebuild(
        task_id,
        exc_type=record.exc_type,
        exc_module=record.exc_module,
        error=record.error,
        traceback=record.traceback,
        modules=modules,
    )


def outcome(
    task_id: str,
    record: ResultRecord,
    propagate: bool,
    modules: Iterable[str] = DEFAULT_EXCEPTION_MODULES,
) -> Any:
    """The value ``get`` returns for a final ``record``, or the error it raises."""
    if record.state is TaskState.FAILURE or (propagate and record.state is TaskState.REVOKED):
        error = exception_of(task_id, record, modules)
        if propagate:
            raise error
        return error
    return record.result


def client_of(source: object, purpose: str) -> Client:
    """The client of ``source`` (a ``Client`` or an app), or of the current app."""
    if source is None:
        source = current.require(purpose)
    if isinstance(source, Client):
        return source
    client = getattr(source, "client", None)
    if not isinstance(client, Client):
        raise TypeError(f"{purpose}: expected a Celeriac app or a Client, not {source!r}")
    return client


class AsyncResult:
    """The state and result of one task, looked up by id.

    ``AsyncResult(id)`` uses the current app (the last ``Celeriac(...)`` created);
    ``AsyncResult(id, app)`` or ``app=`` names one (a ``Client`` works too).
    """

    def __init__(
        self,
        id: str,
        client: object = None,
        *,
        parent: AsyncResult | GroupResult | None = None,
        app: object = None,
    ) -> None:
        self.id = id
        self.client = client_of(client if client is not None else app, "AsyncResult(id)")
        self.parent = parent
        self._final: ResultRecord | None = None

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _sync(self, factory: Callable[[], Coroutine[Any, Any, T]], call: str, twin: str) -> T:
        return self.client.run_sync(factory, call=f"AsyncResult.{call}", twin=f"AsyncResult.{twin}")

    # Async API -----------------------------------------------------------------------------

    async def arecord(self) -> ResultRecord | None:
        """The stored record, or None while nothing is stored (PENDING)."""
        if self._final is not None:
            return self._final
        broker = await self.client.broker()
        record = await broker.results.get(self.id)
        if record is not None and record.state.ready:
            self._final = record
        return record

    async def astate(self) -> TaskState:
        """Async twin of ``state``."""
        record = await self.arecord()
        return TaskState.PENDING if record is None else record.state

    async def aget(self, timeout: float | None = None, propagate: bool = True) -> Any:  # noqa: ASYNC109
        """Wait until the task finishes and return its result.

        Raises ``ResultTimeoutError`` (a ``TimeoutError``) naming the id after ``timeout``
        seconds; with ``propagate``, the task's own exception for FAILURE (its type
        when the app allows it, always also a ``TaskError``) and ``TaskRevokedError``
        for REVOKED. Without it, returns that exception (FAILURE) or None (REVOKED).
        """
        record = self._final
        if record is None:
            broker = await self.client.broker()
            record = await broker.results.wait(self.id, timeout)
            self._final = record
        return outcome(self.id, record, propagate, self.client.exception_modules)

    async def achildren(self) -> list[AsyncResult]:
        """Async twin of ``children``."""
        record = await self.arecord()
        return self._children(record)

    async def aforget(self) -> None:
        """Async twin of ``forget``."""
        self._final = None
        broker = await self.client.broker()
        await broker.results.delete(self.id)

    async def arevoke(
        self, reason: str = "revoked", *, terminate: bool = False, signal: str | int | None = None
    ) -> None:
        """Async twin of ``revoke``."""
        stop = terminate_signal(signal)  # a bad signal is an error, terminate or not
        broker = await self.client.broker()
        await broker.revocations.revoke(self.id, reason, terminate=stop if terminate else None)
        # A task nobody started yet shows REVOKED at once; a started one keeps its state
        # until the worker reports (create only writes where nothing is stored).
        now = datetime.now(UTC)
        await broker.results.create(
            self.id, ResultRecord(state=TaskState.REVOKED, error=reason, date_done=now)
        )

    # Blocking API --------------------------------------------------------------------------

    def record(self) -> ResultRecord | None:
        """The stored record, or None while PENDING."""
        return self._sync(self.arecord, "record()", "arecord()")

    @property
    def state(self) -> TaskState:
        """PENDING, STARTED, RETRY, SUCCESS, FAILURE or REVOKED."""
        return self._sync(self.astate, "state", "astate()")

    @property
    def status(self) -> TaskState:
        """Same as ``state``."""
        return self.state

    @property
    def task_id(self) -> str:
        """Same as ``id``."""
        return self.id

    @property
    def result(self) -> Any:
        """The return value (SUCCESS), the task's exception (FAILURE), else None."""
        record = self.record()
        if record is None or record.state not in (TaskState.SUCCESS, TaskState.FAILURE):
            return None
        return outcome(self.id, record, False, self.client.exception_modules)

    @property
    def info(self) -> Any:
        """What the state says: the return value (SUCCESS), the exception (FAILURE, and
        for RETRY the one that caused it), ``TaskRevokedError`` (REVOKED),
        ``{"hostname": worker}`` (STARTED), None (PENDING)."""
        record = self.record()
        if record is None:
            return None
        if record.state is TaskState.SUCCESS:
            return record.result
        if record.state is TaskState.STARTED:
            return {"hostname": record.worker} if record.worker else None
        return exception_of(self.id, record, self.client.exception_modules)

    @property
    def date_done(self) -> datetime | None:
        """When the task reached its final state (UTC), else None."""
        record = self.record()
        return None if record is None else record.date_done

    @property
    def children(self) -> list[AsyncResult]:
        """For a group's id, its members' results; for a task, [] (see docs/sdk.md)."""
        return self._children(self.record())

    def _children(self, record: ResultRecord | None) -> list[AsyncResult]:
        # Only a group's record lists children; a task's record does not know the tasks
        # it submitted.
        if record is None or not record.children:
            return []
        return [AsyncResult(child, self.client) for child in record.children]

    @property
    def traceback(self) -> str | None:
        """The worker's traceback of a FAILURE, else None."""
        record = self.record()
        return None if record is None else record.traceback

    def ready(self) -> bool:
        """True once the task is SUCCESS, FAILURE or REVOKED."""
        return self.state.ready

    def successful(self) -> bool:
        """True when the task ended in SUCCESS."""
        return self.state is TaskState.SUCCESS

    def failed(self) -> bool:
        """True when the task ended in FAILURE."""
        return self.state is TaskState.FAILURE

    def get(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """Block until the task finishes and return its result (see ``aget``)."""
        return self._sync(lambda: self.aget(timeout, propagate), "get()", "aget()")

    def wait(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """Same as ``get`` (Celery's older name)."""
        return self._sync(lambda: self.aget(timeout, propagate), "wait()", "aget()")

    def forget(self) -> None:
        """Delete the stored result; the state reads PENDING again. A task still running
        stores a new record when it ends."""
        self._sync(self.aforget, "forget()", "aforget()")

    def revoke(
        self, reason: str = "revoked", *, terminate: bool = False, signal: str | int | None = None
    ) -> None:
        """Revoke the task durably: every worker skips it, also workers started later.

        With ``terminate=True`` a worker running it also stops it, and it ends REVOKED
        with a reason saying so; it is not retried, and what depends on it fails as
        for any revoke. An ``async def`` task is cancelled (it sees ``CancelledError``
        at its current ``await``); under ``--pool processes`` a sync task's child
        process gets ``signal`` (``"SIGTERM"``, the default, then SIGKILL if it is
        still alive 5 s later; or ``"SIGKILL"``) and is replaced. A thread cannot be
        stopped: a sync task under ``--pool threads`` or ``asyncio`` runs to its end,
        then ends REVOKED, its outcome discarded.
        """
        self._sync(
            lambda: self.arevoke(reason, terminate=terminate, signal=signal),
            "revoke()",
            "arevoke()",
        )


class GroupResult:
    """The results of a group's members, in the order they were given.

    ``results`` are ``AsyncResult``s or task ids; the client is ``client`` (a
    ``Client`` or an app), else ``app``, else the current app's.
    """

    def __init__(
        self,
        id: str,
        results: Sequence[AsyncResult | str] = (),
        client: object = None,
        *,
        app: object = None,
    ) -> None:
        self.id = id
        self.client = client_of(client if client is not None else app, "GroupResult(id)")
        self.results = [
            r if isinstance(r, AsyncResult) else AsyncResult(r, self.client) for r in results
        ]

    @property
    def children(self) -> list[AsyncResult]:
        """Same as ``results``."""
        return self.results

    def __repr__(self) -> str:
        return f"<GroupResult {self.id} ({len(self.results)} tasks)>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Any:
        return iter(self.results)

    @classmethod
    async def arestore(
        cls, group_id: str, client: object = None, *, app: object = None
    ) -> GroupResult | None:
        """The group stored under ``group_id`` (by its submission, or ``save()``), or None.

        The client is ``client`` (a ``Client`` or an app), else ``app``, else the
        current app's.
        """
        resolved = client_of(client if client is not None else app, "GroupResult.restore()")
        broker = await resolved.broker()
        record = await broker.results.get(group_id)
        if record is None or record.children is None:
            return None
        return cls(group_id, record.children, resolved)

    @classmethod
    def restore(
        cls, group_id: str, client: object = None, *, app: object = None
    ) -> GroupResult | None:
        """Blocking twin of ``arestore``."""
        resolved = client_of(client if client is not None else app, "GroupResult.restore()")
        return resolved.run_sync(
            lambda: cls.arestore(group_id, resolved), call="GroupResult.restore", twin="arestore"
        )

    async def asave(self) -> None:
        """Async twin of ``save``."""
        broker = await self.client.broker()
        record = ResultRecord(state=TaskState.PENDING, children=[r.id for r in self.results])
        await broker.results.put(self.id, record)

    def save(self) -> None:
        """Store the member ids under the group id, for ``restore``. A group sent with
        ``group(...)`` is stored already; this is for one built by hand."""
        self.client.run_sync(self.asave, call="GroupResult.save()", twin="asave()")

    async def aforget(self) -> None:
        """Async twin of ``forget``."""
        await asyncio.gather(*(r.aforget() for r in self.results))
        broker = await self.client.broker()
        await broker.results.delete(self.id)

    def forget(self) -> None:
        """Delete the members' results and the stored group."""
        self.client.run_sync(self.aforget, call="GroupResult.forget()", twin="aforget()")

    async def astates(self) -> list[TaskState]:
        """The member states, in order."""
        return list(await asyncio.gather(*(r.astate() for r in self.results)))

    async def aget(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 - part of the public API
        propagate: bool = True,
    ) -> list[Any]:
        """Wait for every member; their results in order (raises like ``AsyncResult.aget``)."""
        try:
            async with asyncio.timeout(timeout):
                return [await r.aget(None, propagate) for r in self.results]
        except TimeoutError:
            raise ResultTimeoutError(self.id, timeout) from None

    async def arevoke(
        self, reason: str = "revoked", *, terminate: bool = False, signal: str | int | None = None
    ) -> None:
        """Revoke every member (``terminate`` and ``signal`` as for ``AsyncResult.revoke``)."""
        terminate_signal(signal)  # a bad signal fails before anything is revoked
        await asyncio.gather(
            *(r.arevoke(reason, terminate=terminate, signal=signal) for r in self.results)
        )

    def _states(self) -> list[TaskState]:
        return self.client.run_sync(self.astates, call="GroupResult state", twin="astates()")

    def ready(self) -> bool:
        """True when every member is final."""
        return all(s.ready for s in self._states())

    def successful(self) -> bool:
        """True when every member succeeded."""
        return all(s is TaskState.SUCCESS for s in self._states())

    def failed(self) -> bool:
        """True when any member failed."""
        return any(s is TaskState.FAILURE for s in self._states())

    def completed_count(self) -> int:
        """How many members succeeded."""
        return sum(s is TaskState.SUCCESS for s in self._states())

    def get(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Block until every member finishes; their results in order."""
        return self.client.run_sync(
            lambda: self.aget(timeout, propagate), call="GroupResult.get()", twin="aget()"
        )

    def join(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Same as ``get``: every member's result, in order (``timeout`` is for them all)."""
        return self.client.run_sync(
            lambda: self.aget(timeout, propagate), call="GroupResult.join()", twin="aget()"
        )

    def revoke(
        self, reason: str = "revoked", *, terminate: bool = False, signal: str | int | None = None
    ) -> None:
        """Revoke every member (``terminate`` and ``signal`` as for ``AsyncResult.revoke``)."""
        self.client.run_sync(
            lambda: self.arevoke(reason, terminate=terminate, signal=signal),
            call="GroupResult.revoke()",
            twin="arevoke()",
        )
