"""What the dashboard's JSON API answers, read from JetStream when asked.

Each function takes the JetStream context and returns a JSON-ready value; nothing
is kept between calls. Figures come from ``celeriac.inspection`` (as ``celeriac
status`` shows them) and ``celeriac.dlq``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from datetime import UTC, datetime
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from celeriac import dlq, inspection
from celeriac.dashboard.recent import RESULTS_STREAM, TaskFilter, recent_tasks, row_of
from celeriac.protocol import names
from celeriac.protocol.envelope import DeadLetter, ResultRecord
from celeriac.protocol.signing import keys_from_env
from celeriac.protocol.states import TaskState
from celeriac.revocation import RevocationStore
from celeriac.streams import work_queues

DEAD_LETTERS_SHOWN = 100
LETTERS_SEARCHED = 200  # newest dead letters searched for a task's own


class NothingStoredError(LookupError):
    """What was asked for is not stored; the message says what."""


def now() -> str:
    """The server's time, so the page can show ages without trusting the browser's clock."""
    return datetime.now(UTC).isoformat()


async def _settled(js: JetStreamContext, queue: str) -> int:
    """Tasks the queue's consumer saw settled, as a running count (its ack floor)."""
    info = await js.consumer_info(names.stream_name(queue), names.CONSUMER_NAME)
    return int(info.ack_floor.consumer_seq or 0) if info.ack_floor else 0


async def _queue(js: JetStreamContext, queue: str) -> dict[str, Any] | None:
    try:
        status, settled = await asyncio.gather(
            inspection.queue_status(js, queue), _settled(js, queue)
        )
    except (inspection.UnknownQueueError, NotFoundError):
        return None  # deleted between listing and reading
    shown = status.as_json()
    del shown["rate"]  # the page derives it from `settled` between two polls
    return {**shown, "settled": settled}


async def queues(js: JetStreamContext) -> dict[str, Any]:
    """Every queue's counts, and a running count of settled tasks for rates."""
    found = await asyncio.gather(*(_queue(js, q) for q in await work_queues(js)))
    return {"now": now(), "queues": [q for q in found if q is not None]}


async def workers(js: JetStreamContext) -> dict[str, Any]:
    """The live workers, from their records in the workers bucket."""
    found = await inspection.live_workers(js)
    return {"now": now(), "workers": [w.model_dump(mode="json") for w in found]}


async def tasks(
    js: JetStreamContext, where: TaskFilter, *, before: int | None, limit: int
) -> dict[str, Any]:
    """The newest tasks that match ``where`` (a bounded read, see ``recent``)."""
    page = await recent_tasks(js, where, before=before, limit=limit)
    return {"now": now(), **page.as_json()}


async def _written(js: JetStreamContext, task_id: str) -> datetime | None:
    """When the task's record was last written (the stream's timestamp)."""
    try:
        msg = await js.get_msg(
            RESULTS_STREAM, subject=names.kv_subject(names.RESULTS_BUCKET, task_id)
        )
    except NotFoundError:
        return None  # nothing stored, or no results bucket yet
    row = row_of(msg)
    return row.written if row else None


def _call(letter: DeadLetter) -> dict[str, Any] | None:
    """The args and kwargs kept in a dead letter's original message, when readable."""
    if letter.original_truncated:
        return None
    try:
        raw = (base64.b64decode(letter.original) if letter.original_encoding == "base64"
               else letter.original.encode())  # fmt: skip
        message = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    return {"args": message.get("args", []), "kwargs": message.get("kwargs", {})}


def timeline(
    record: ResultRecord | None, written: datetime | None, letter: dlq.DeadLetterEntry | None
) -> list[dict[str, Any]]:
    """The task's states with their times, as far as they are stored, oldest first."""
    events: list[tuple[datetime, str, str]] = []
    if letter is not None:
        events.append((letter.letter.failed_at, "DEAD-LETTERED", letter.letter.reason.value))
    if record is not None and written is not None:
        events.append((written, record.state.value, "state stored"))
    if record is not None and record.date_done is not None and record.state.ready:
        events.append((record.date_done, record.state.value, "finished"))
    events.sort(key=lambda e: e[0])
    return [{"time": t.isoformat(), "state": s, "what": w} for t, s, w in events]


async def _letter_of(
    js: JetStreamContext, task_id: str, record: ResultRecord | None
) -> dlq.DeadLetterEntry | None:
    # Only a failed or unknown task can have a letter: skip the search otherwise.
    if record is not None and record.state not in (TaskState.FAILURE, TaskState.PENDING):
        return None
    if not names.is_valid_task_id(task_id):
        return None
    # Among the newest letters only: a bounded read, however many letters are stored.
    recent = await dlq.list_dead_letters(js, limit=LETTERS_SEARCHED)
    return next((e for e in recent if e.letter.task_id == task_id), None)


async def task(js: JetStreamContext, task_id: str) -> dict[str, Any]:
    """One task: its stored record, dead letter if any, timeline and call when known."""
    record = await inspection.task_result(js, task_id)
    written, letter = await asyncio.gather(_written(js, task_id), _letter_of(js, task_id, record))
    if record is None and letter is None:
        raise NothingStoredError(
            f"nothing stored for task {task_id}: it waits, is unknown, or its result expired"
        )
    shown: dict[str, Any] = {"id": task_id, "state": "PENDING"}
    if record is not None:
        shown.update(record.model_dump(mode="json"))
    shown["written"] = written.isoformat() if written else None
    shown["dead_letter"] = letter.as_json() if letter is not None else None
    call = _call(letter.letter) if letter is not None else None
    shown["args"] = call["args"] if call else None
    shown["kwargs"] = call["kwargs"] if call else None
    shown["timeline"] = timeline(record, written, letter)
    return {"now": now(), "task": shown}


async def dead_letters(js: JetStreamContext, queue: str | None = None) -> dict[str, Any]:
    """The newest dead letters (of ``queue``, else of every queue) and the total."""
    entries, total = await asyncio.gather(
        dlq.list_dead_letters(js, queue, limit=DEAD_LETTERS_SHOWN),
        dlq.dead_letter_count(js, queue),
    )
    return {"now": now(), "total": total, "dead_letters": [_letter(e) for e in entries]}


def _letter(entry: dlq.DeadLetterEntry) -> dict[str, Any]:
    """A letter for the list: what went wrong, not the (possibly large) original."""
    shown = entry.as_json()
    for field in ("original", "original_headers"):
        shown.pop(field, None)
    return shown


async def replay(js: JetStreamContext, ref: str) -> dict[str, Any]:
    """Replay the dead letter ``ref`` (``<queue>:<sequence>`` or a task id)."""
    entry = await dlq.find_dead_letter(js, ref)
    if entry is None:
        raise NothingStoredError(f"no dead letter {ref}: replayed or purged meanwhile?")
    # Signed anew when the dashboard has keys (CELERIAC_SIGNING_KEYS or _FILE).
    [done] = await dlq.replay(js, [entry], keys=keys_from_env(os.environ))
    return {"ref": entry.ref, "outcome": done.outcome.value, "why": done.why,
            "task_id": done.task_id}  # fmt: skip


async def purge_dead_letters(js: JetStreamContext, queue: str) -> dict[str, Any]:
    """Delete every dead letter of ``queue``."""
    return {"queue": queue, "purged": await dlq.purge_dead_letters(js, queue)}


async def revoke(revocations: RevocationStore, task_id: str, reason: str) -> dict[str, Any]:
    """Revoke ``task_id``: workers skip it from now on."""
    if not names.is_valid_task_id(task_id):
        raise ValueError(f"invalid task id {task_id[:80]!r}")
    await revocations.revoke(task_id, reason)
    return {"id": task_id, "revoked": True, "reason": reason}
