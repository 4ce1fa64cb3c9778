"""Handles on submitted work: ``AsyncResult`` for one task, ``GroupResult`` for a group.

Both read the results bucket through a ``Client``. The blocking methods run on the
client's background loop, so they work from plain code; ``a``-prefixed twins run on
the caller's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from celeriac.client import Client
from celeriac.exceptions import ResultTimeoutError, TaskError, TaskRevokedError
from celeriac.protocol.envelope import ResultRecord
from celeriac.protocol.states import TaskState

T = TypeVar("T")


def outcome(task_id: str, record: ResultRecord, propagate: bool) -> Any:
    """The value ``get`` returns for a final ``record``, or the error it raises."""
    if propagate and record.state is TaskState.FAILURE:
        raise TaskError(task_id, record.exc_type, record.error or "failed", record.traceback)
    if propagate and record.state is TaskState.REVOKED:
        raise TaskRevokedError(f"task {task_id} was revoked: {record.error or 'revoked'}")
    if record.state is TaskState.FAILURE:
        return TaskError(task_id, record.exc_type, record.error or "failed", record.traceback)
    return record.result


class AsyncResult:
    """The state and result of one task, looked up by id."""

    def __init__(
        self, id: str, client: Client, *, parent: AsyncResult | GroupResult | None = None
    ) -> None:
        self.id = id
        self.client = client
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
        seconds; with ``propagate``, ``TaskError`` for FAILURE and ``TaskRevokedError``
        for REVOKED.
        """
        record = self._final
        if record is None:
            broker = await self.client.broker()
            record = await broker.results.wait(self.id, timeout)
            self._final = record
        return outcome(self.id, record, propagate)

    async def arevoke(self, reason: str = "revoked") -> None:
        """Async twin of ``revoke``."""
        broker = await self.client.broker()
        await broker.revocations.revoke(self.id, reason)
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
    def result(self) -> Any:
        """The return value (SUCCESS), a ``TaskError`` (FAILURE), else None."""
        record = self.record()
        if record is None or record.state not in (TaskState.SUCCESS, TaskState.FAILURE):
            return None
        return outcome(self.id, record, propagate=False)

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

    def revoke(self, reason: str = "revoked") -> None:
        """Revoke the task durably: every worker skips it, also workers started later."""
        self._sync(lambda: self.arevoke(reason), "revoke()", "arevoke()")


class GroupResult:
    """The results of a group's members, in the order they were given."""

    def __init__(self, id: str, results: Sequence[AsyncResult], client: Client) -> None:
        self.id = id
        self.results = list(results)
        self.client = client

    def __repr__(self) -> str:
        return f"<GroupResult {self.id} ({len(self.results)} tasks)>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Any:
        return iter(self.results)

    @classmethod
    async def arestore(cls, group_id: str, client: Client) -> GroupResult | None:
        """The group stored under ``group_id`` by its submission, or None."""
        broker = await client.broker()
        record = await broker.results.get(group_id)
        if record is None or record.children is None:
            return None
        return cls(group_id, [AsyncResult(c, client) for c in record.children], client)

    @classmethod
    def restore(cls, group_id: str, client: Client) -> GroupResult | None:
        """Blocking twin of ``arestore``."""
        return client.run_sync(
            lambda: cls.arestore(group_id, client), call="GroupResult.restore", twin="arestore"
        )

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

    async def arevoke(self, reason: str = "revoked") -> None:
        """Revoke every member."""
        await asyncio.gather(*(r.arevoke(reason) for r in self.results))

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

    def revoke(self, reason: str = "revoked") -> None:
        """Revoke every member."""
        self.client.run_sync(
            lambda: self.arevoke(reason), call="GroupResult.revoke()", twin="arevoke()"
        )
