"""The JSON documents on the wire: task envelope, result record, dead letter.

Version 1. Fields may be added in later versions; a consumer must ignore fields
it does not know, and reject a ``v`` it does not support.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from celeriac.protocol.names import PROTOCOL_VERSION, check_queue_name, is_valid_task_id
from celeriac.protocol.states import TaskState


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def dumps(self) -> bytes:
        """Serialize to compact JSON bytes, leaving out unset optional fields."""
        return self.model_dump_json(exclude_none=True).encode()


class Signature(_Wire):
    """A task call not yet sent: the unit of canvas (chain, group, chord)."""

    task: str
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    # Delivery options as accepted by apply_async: queue, countdown, expires, task_id...
    options: dict[str, Any] = Field(default_factory=dict)
    # An immutable signature ignores its parent's result instead of receiving it.
    immutable: bool = False


class ChordRef(_Wire):
    """Membership of a task in a chord header: who counts, and what runs at the end."""

    id: str
    size: int = Field(ge=1)
    callback: Signature


class TaskMessage(_Wire):
    """The envelope published on ``celeriac.tasks.<queue>``: one task to run."""

    v: int = PROTOCOL_VERSION
    id: str
    task: str = Field(min_length=1)
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    queue: str
    retries: int = Field(default=0, ge=0)
    eta: datetime | None = None
    expires: datetime | None = None
    parent_id: str | None = None
    root_id: str | None = None
    group_id: str | None = None
    group_index: int | None = None
    chord: ChordRef | None = None
    # The rest of a chain: run in order, each receiving the previous result.
    chain: list[Signature] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    ignore_result: bool = False
    max_retries: int | None = Field(default=None, ge=0)
    time_limit: float | None = Field(default=None, gt=0)
    soft_time_limit: float | None = Field(default=None, gt=0)

    @field_validator("v", mode="before")
    @classmethod
    def _supported_version(cls, v: Any) -> int:
        # Before coercion: "1" is not version 1.
        if type(v) is not int or v != PROTOCOL_VERSION:
            raise ValueError(f"unsupported protocol version {v!r}; this worker speaks v1")
        return v

    @field_validator("id")
    @classmethod
    def _valid_id(cls, v: str) -> str:
        if not is_valid_task_id(v):
            raise ValueError(f"invalid task id {v!r}: use letters, digits, '-', '_', '=', '.'")
        return v

    @field_validator("queue")
    @classmethod
    def _valid_queue(cls, v: str) -> str:
        return check_queue_name(v)


class ResultRecord(_Wire):
    """The value stored under a task id in the results bucket."""

    state: TaskState
    task: str | None = None
    result: Any = None
    # "ExceptionType: message" for FAILURE and RETRY; the reason for REVOKED.
    error: str | None = None
    exc_type: str | None = None
    traceback: str | None = None
    retries: int = 0
    worker: str | None = None
    date_done: datetime | None = None
    # For a group: the member ids, in order (stored under the group's id).
    children: list[str] | None = None


class DeadLetterReason(StrEnum):
    """Why a message ended in the dead-letter stream."""

    MALFORMED = "malformed"
    UNKNOWN_TASK = "unknown_task"
    MAX_RETRIES = "max_retries"
    UNSUPPORTED_VERSION = "unsupported_version"


class DeadLetter(_Wire):
    """The document published on ``celeriac.dlq.<queue>``: the original and what went wrong."""

    reason: DeadLetterReason
    error: str
    traceback: str | None = None
    task_id: str | None = None
    task: str | None = None
    queue: str
    deliveries: int
    stream_sequence: int | None = None
    worker: str | None = None
    failed_at: datetime
    # The original message body as text (UTF-8, invalid bytes replaced) and headers.
    original: str
    original_headers: dict[str, str] = Field(default_factory=dict)
