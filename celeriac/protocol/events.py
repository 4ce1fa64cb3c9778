"""Task events on the wire: what happened to a task, as it happens, when workers say so.

A worker started with ``--events`` publishes one small JSON document per step of a
task on ``celeriac.events.<queue>.<type>``; the ``CELERIAC_EVENTS`` stream keeps
them within an age and size limit, so anyone (``celeriac events``, a dashboard,
another language) can tail or replay the last hour. Events are a view, not a
record: a worker drops one rather than slow a task, and the stream forgets old
ones. Version 1; fields may be added, a reader must ignore fields it does not know.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, field_validator

from celeriac.protocol.envelope import _rfc3339, _Strict

# An error in an event is a hint, the full one is in the result and the dead letter.
EVENT_ERROR_CHARS = 500


class EventType(StrEnum):
    """The step a task event reports; also the last token of its subject."""

    RECEIVED = "received"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    REVOKED = "revoked"
    DEAD_LETTERED = "dead_lettered"


# The types that end an attempt, which carry its run time when it ran.
FINISHED = frozenset({EventType.SUCCEEDED, EventType.FAILED, EventType.RETRIED})


class TaskEvent(_Strict):
    """The document published on ``celeriac.events.<queue>.<type>``."""

    v: Literal[1] = 1
    type: EventType
    time: datetime
    # Missing only for a message so malformed that it names no task id or task.
    task_id: str | None = None
    task: str | None = None
    queue: str
    worker: str
    retries: int = Field(default=0, ge=0)
    runtime: float | None = Field(default=None, ge=0, description="seconds the attempt ran")
    error_type: str | None = None
    error: str | None = Field(default=None, max_length=EVENT_ERROR_CHARS)
    # When a retried task runs again.
    eta: datetime | None = None

    @field_validator("time", "eta", mode="before")
    @classmethod
    def _time(cls, v: Any) -> Any:
        return _rfc3339(v)

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, v: Any) -> Any:
        # Strict mode takes only the enum member; the wire carries its string.
        return EventType(v) if isinstance(v, str) else v


def clip_error(error: str | None) -> str | None:
    """``error`` cut to what an event carries, marked when cut."""
    if error is None or len(error) <= EVENT_ERROR_CHARS:
        return error
    return error[: EVENT_ERROR_CHARS - 3] + "..."
