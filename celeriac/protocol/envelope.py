"""The JSON documents on the wire: task envelope, result record, dead letter.

Version 1. Fields may be added in later versions; a consumer must ignore fields
it does not know, and reject a ``v`` it does not support.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from celeriac.protocol.names import PROTOCOL_VERSION, check_queue_name, is_valid_task_id
from celeriac.protocol.states import TaskState
from celeriac.protocol.webhooks import WebhookTarget


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def dumps(self) -> bytes:
        """Serialize to compact JSON bytes, leaving out unset optional fields."""
        return self.model_dump_json(exclude_none=True).encode()


# Bounds a worker enforces on what it reads: generous for any real use, small enough
# that a hostile value cannot make a count or a delay meaningless.
MAX_RETRIES = 10_000
MAX_SECONDS = 100 * 365 * 24 * 3600
MAX_GROUP_SIZE = 1_000_000
# How deeply the canvas one message carries may nest (a group in a chain in a group...):
# far more than real workflows use, and it keeps a hostile document from costing much.
MAX_CANVAS_DEPTH = 10
# A task name is what ``module.qualname`` gives: printable, no control characters
# (it appears in log lines and headers), at most 256 characters.
_TASK_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")


def check_task_name(name: str) -> str:
    """Return ``name`` or raise ValueError saying what a task name may contain."""
    if not _TASK_NAME.match(name):
        raise ValueError(
            f"invalid task name {name[:80]!r}: use 1-256 printable characters, "
            "no control characters"
        )
    return name


def _rfc3339(value: Any) -> Any:
    # JSON has no time type: only a string is a time. Numbers (which pydantic would
    # read as seconds since 1970) and anything else are refused, naming the field.
    if isinstance(value, datetime) or value is None:
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be an RFC 3339 time string, not {type(value).__name__}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"must be an RFC 3339 time string, not {value[:40]!r}") from None


class _Strict(_Wire):
    """What workers parse from anyone: no type coercion (``"1"`` is not ``1``)."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


def _valid_group_id(v: str | None) -> str | None:
    if v is not None and not is_valid_task_id(v):
        raise ValueError(f"invalid group id {v[:80]!r}: use letters, digits, '-', '_', '=', '.'")
    return v


def _empty(value: Any) -> bool:
    return not value


class Signature(_Strict):
    """A task call not yet sent: the unit of canvas (chain, group, chord, links)."""

    task: str
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    # Delivery options as accepted by apply_async: queue, countdown, expires, task_id...
    options: dict[str, Any] = Field(default_factory=dict)
    # An immutable signature ignores its parent's result instead of receiving it.
    immutable: bool = False
    # Steps run right after this one, before the rest of the chain it sits in (a chain
    # inside a group, a chord body that is a chain). Left out of the JSON when empty.
    chain: list[Step] = Field(default_factory=list, exclude_if=_empty)
    # Membership its message gets when it is launched as a chord callback (a chord
    # nested in a group or chord); otherwise a step inherits its parent's.
    group_id: str | None = None
    group_index: int | None = Field(default=None, ge=0, lt=MAX_GROUP_SIZE)
    chord: ChordRef | None = None
    # Run when its task succeeds (with the result first) or fails for good (with its id).
    link: list[Signature] = Field(default_factory=list, exclude_if=_empty)
    link_error: list[Signature] = Field(default_factory=list, exclude_if=_empty)

    @field_validator("task")
    @classmethod
    def _valid_task(cls, v: str) -> str:
        return check_task_name(v)

    @field_validator("group_id")
    @classmethod
    def _valid_group(cls, v: str | None) -> str | None:
        return _valid_group_id(v)


class GroupStep(_Strict):
    """A group inside a chain: its members start together when the step before it succeeds,
    each receiving that step's result. A task following it (``chain[0]``, else the next
    step of the enclosing chain) is the chord callback, receiving the members' results."""

    group: list[Step] = Field(min_length=1, max_length=MAX_GROUP_SIZE)
    group_id: str | None = None
    chain: list[Step] = Field(default_factory=list, exclude_if=_empty)

    @field_validator("group_id")
    @classmethod
    def _valid_group(cls, v: str | None) -> str | None:
        return _valid_group_id(v)


def _step_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "group" if "group" in value else "task"
    return "group" if isinstance(value, GroupStep) else "task"


#: One step of a chain: a task signature, or a group (``{"group": [...]}``).
Step = Annotated[
    Annotated[Signature, Tag("task")] | Annotated[GroupStep, Tag("group")],
    Discriminator(_step_kind),
]


class ChordRef(_Strict):
    """Membership of a task in a chord header: who counts, and what runs at the end."""

    id: str
    size: int = Field(ge=1, le=MAX_GROUP_SIZE)
    callback: Signature


def step_depth(step: Signature | GroupStep) -> int:
    """How deeply ``step`` nests: 1 for a plain signature, one more for each group, link
    or chord inside another. What follows in a chain adds no level: a worker moves steps
    between chains as they run, and the depth must never grow on the way."""
    inner: list[Signature | GroupStep] = []
    if isinstance(step, GroupStep):
        inner.extend(step.group)
    else:
        inner.extend(step.link)
        inner.extend(step.link_error)
        if step.chord is not None:
            inner.append(step.chord.callback)
    nested = 1 + max((step_depth(s) for s in inner), default=0)
    return max([nested, *(step_depth(s) for s in step.chain)])


def canvas_depth(
    chain: Sequence[Signature | GroupStep],
    chord: ChordRef | None = None,
    link: Sequence[Signature] = (),
    link_error: Sequence[Signature] = (),
) -> int:
    """How deeply the canvas a message carries nests (0: none; a flat chain or chord: 1;
    a group in a chain: 2)."""
    parts: list[Signature | GroupStep] = [*chain, *link, *link_error]
    if chord is not None:
        parts.append(chord.callback)
    return max((step_depth(s) for s in parts), default=0)


class TaskMessage(_Strict):
    """The envelope published on ``celeriac.tasks.<queue>``: one task to run."""

    v: int = PROTOCOL_VERSION
    id: str
    task: str
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    queue: str
    retries: int = Field(default=0, ge=0, le=MAX_RETRIES)
    eta: datetime | None = None
    expires: datetime | None = None
    parent_id: str | None = None
    root_id: str | None = None
    group_id: str | None = None
    group_index: int | None = Field(default=None, ge=0, lt=MAX_GROUP_SIZE)
    chord: ChordRef | None = None
    # The rest of a chain: run in order, each receiving the previous result.
    chain: list[Step] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    ignore_result: bool = False
    max_retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES)
    time_limit: float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    soft_time_limit: float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    # Where to POST when the task settles (protocol.webhooks); a secret's name, never a secret.
    webhook: WebhookTarget | None = None
    # Sent when this task succeeds (the result first) / fails for good (this id first).
    link: list[Signature] = Field(default_factory=list, exclude_if=_empty)
    link_error: list[Signature] = Field(default_factory=list, exclude_if=_empty)

    @model_validator(mode="after")
    def _bounded_canvas(self) -> TaskMessage:
        if self.chain or self.chord is not None or self.link or self.link_error:
            depth = canvas_depth(self.chain, self.chord, self.link, self.link_error)
            if depth > MAX_CANVAS_DEPTH:
                raise ValueError(
                    f"the canvas in chain/chord/link is nested {depth} levels deep, "
                    f"more than the {MAX_CANVAS_DEPTH} allowed"
                )
        return self

    @field_validator("eta", "expires", mode="before")
    @classmethod
    def _time(cls, v: Any) -> Any:
        return _rfc3339(v)

    @field_validator("task")
    @classmethod
    def _valid_task(cls, v: str) -> str:
        return check_task_name(v)

    @field_validator("parent_id", "root_id", "group_id")
    @classmethod
    def _valid_link(cls, v: str | None) -> str | None:
        if v is not None and not is_valid_task_id(v):
            raise ValueError(f"invalid task id {v[:80]!r}: use letters, digits, '-', '_', '=', '.'")
        return v

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


Signature.model_rebuild()
GroupStep.model_rebuild()


class ResultRecord(_Wire):
    """The value stored under a task id in the results bucket."""

    state: TaskState
    task: str | None = None
    result: Any = None
    # "ExceptionType: message" for FAILURE and RETRY; the reason for REVOKED.
    error: str | None = None
    exc_type: str | None = None
    # The module of the exception's type ("builtins", "shop.errors"): with exc_type it
    # names the class, which a caller may re-raise (never unpickled).
    exc_module: str | None = None
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
    # The task ran, but its outcome cannot be stored (too large, not JSON).
    UNSTORABLE_RESULT = "unstorable_result"
    # The task ran, but the next chain step or the chord callback cannot be sent.
    INVALID_CONTINUATION = "invalid_continuation"
    # Delivered again and again without an outcome: each run crashed or killed the worker.
    POISON = "poison"
    # JetStream's maxDeliveries ran out before the task's own retries did.
    MAX_DELIVERIES = "max_deliveries"
    # A worker holding signing keys got a message without a signature, or with one
    # that does not verify (unknown key id, mismatch): see protocol.signing.
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    # A completion webhook (not a task) could not be delivered: the original is the job.
    WEBHOOK_FAILED = "webhook_failed"


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
    # The original body: as text when it is UTF-8, else base64 (``original_encoding``).
    # When the letter would not fit in a NATS message, a prefix of it, with the whole
    # body's size and SHA-256 so it can be told apart and matched.
    original: str
    original_encoding: str = "utf-8"
    original_size: int | None = None
    original_sha256: str | None = None
    original_truncated: bool = False
    original_headers: dict[str, str] = Field(default_factory=dict)
