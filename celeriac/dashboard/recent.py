"""Recent tasks: the newest records of the results bucket, read backwards.

The bucket is the stream ``KV_celeriac_results``; with one revision per key, each
task's latest record is one message, and the stream's sequence orders them by when
they were last written. A request reads at most ``scan`` sequences down from the
top (or from a cursor) with single-message gets, filtering as it goes, so its work and
memory are bounded however many tasks the bucket holds; ``next_before`` lets the
page ask for older ones.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from celeriac.protocol import names
from celeriac.protocol.envelope import ResultRecord
from celeriac.protocol.states import TaskState

RESULTS_STREAM = f"KV_{names.RESULTS_BUCKET}"
_KEY_PREFIX = names.kv_subject(names.RESULTS_BUCKET, "")
SCAN_LIMIT = 200  # sequences read per request, at most
# Direct gets in flight at once: quick on a local server, gentle on a busy one.
_CONCURRENT_GETS = 25


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks to list: all of these that are set must hold."""

    state: TaskState | None = None
    task: str | None = None  # a part of the task's name, any case
    since: datetime | None = None  # last written at or after
    until: datetime | None = None  # last written at or before

    def matches(self, row: TaskRow) -> bool:
        """True when ``row`` passes every condition set."""
        if self.state is not None and row.record.state is not self.state:
            return False
        if self.task and self.task.lower() not in (row.record.task or "").lower():
            return False
        if self.since is not None and row.written < self.since:
            return False
        return self.until is None or row.written <= self.until


@dataclass(frozen=True)
class TaskRow:
    """One task's latest record and when it was written."""

    id: str
    sequence: int
    written: datetime
    record: ResultRecord

    def as_json(self) -> dict[str, Any]:
        """The row as the API gives it: the summary, not the result or traceback."""
        r = self.record
        return {
            "id": self.id, "state": r.state.value, "task": r.task, "worker": r.worker,
            "retries": r.retries, "error": r.error, "written": self.written.isoformat(),
            "date_done": r.date_done.isoformat() if r.date_done else None,
        }  # fmt: skip


@dataclass(frozen=True)
class TaskPage:
    """The tasks found, how many sequences were read, and where older ones start."""

    tasks: list[TaskRow]
    scanned: int
    next_before: int | None  # ask again with before=this for older; None: none left

    def as_json(self) -> dict[str, Any]:
        """The page as the API gives it."""
        return {
            "tasks": [row.as_json() for row in self.tasks],
            "scanned": self.scanned,
            "next_before": self.next_before,
        }


def row_of(msg: RawStreamMsg) -> TaskRow | None:
    """The row stored in ``msg``; None for a deletion marker or a record not ours."""
    if not msg.data or not msg.subject or not msg.subject.startswith(_KEY_PREFIX):
        return None
    try:
        record = ResultRecord.model_validate_json(msg.data)
    except ValidationError:
        return None
    if msg.time is None or msg.seq is None:
        return None
    return TaskRow(msg.subject[len(_KEY_PREFIX) :], msg.seq, msg.time, record)


async def _get(js: JetStreamContext, seq: int, direct: bool) -> RawStreamMsg | None:
    try:
        return await js.get_msg(RESULTS_STREAM, seq=seq, direct=direct)
    except NotFoundError:
        return None  # replaced by a newer revision, expired or deleted


async def _bounds(js: JetStreamContext) -> tuple[int, int, bool] | None:
    """(first, last sequence, direct gets allowed) of the results stream, if any."""
    try:
        info = await js.stream_info(RESULTS_STREAM)
    except NotFoundError:
        return None
    first, last = int(info.state.first_seq or 0), int(info.state.last_seq or 0)
    # Direct gets spread reads over replicas; a bucket made without them answers the API.
    direct = bool(info.config.allow_direct)
    return (first, last, direct) if last >= first and last > 0 else None


async def recent_tasks(
    js: JetStreamContext,
    where: TaskFilter,
    *,
    before: int | None = None,
    limit: int = 50,
    scan: int = SCAN_LIMIT,
) -> TaskPage:
    """Up to ``limit`` tasks matching ``where``, newest first, reading at most ``scan``
    sequences below ``before`` (default: from the newest)."""
    bounds = await _bounds(js)
    if bounds is None:
        return TaskPage([], 0, None)
    first, last, direct = bounds
    top = last if before is None else min(last, before - 1)
    found: list[TaskRow] = []
    seen: set[str] = set()  # at most `scan` ids: several revisions of one key show once
    seq, scanned = top, 0
    while seq >= first and scanned < scan and len(found) < limit:
        stop = max(first - 1, seq - min(_CONCURRENT_GETS, scan - scanned))
        chunk = list(range(seq, stop, -1))
        messages = await asyncio.gather(*(_get(js, s, direct) for s in chunk))
        for s, msg in zip(chunk, messages, strict=True):
            scanned += 1
            seq = s - 1
            row = row_of(msg) if msg is not None else None
            if row is None or row.id in seen:
                continue
            seen.add(row.id)
            if where.since is not None and row.written < where.since:
                return TaskPage(found, scanned, None)  # older ones are older still
            if where.matches(row):
                found.append(row)
                if len(found) >= limit:
                    break
    return TaskPage(found, scanned, seq + 1 if seq >= first else None)
