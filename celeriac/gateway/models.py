"""The JSON the gateway reads and writes, as pydantic models (they make the OpenAPI
document). Types are strict: ``"5"`` is not a number of seconds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, WithJsonSchema, field_validator

from celeriac.protocol.webhooks import (
    DEFAULT_EVENTS,
    DEFAULT_SECRET,
    MAX_URL_CHARS,
    WebhookEvent,
)
from celeriac.submitting import MAX_SECONDS

Seconds = Annotated[float, Field(strict=True)]

_URL_SCHEMA = {
    "type": "string",
    "format": "uri",
    "maxLength": MAX_URL_CHARS,
    "description": "an http:// or https:// URL with a host, no user or password",
}
# The SDK's ``webhook=`` option (protocol.webhooks.webhook_target) checks the value, so
# the gateway refuses what the SDK refuses; this only describes it in the OpenAPI document.
Webhook = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [
                _URL_SCHEMA,
                {
                    "type": "object",
                    "properties": {
                        "url": _URL_SCHEMA,
                        "events": {
                            "type": "array",
                            "items": {"type": "string", "enum": [e.value for e in WebhookEvent]},
                            "minItems": 1,
                            "default": [e.value for e in DEFAULT_EVENTS],
                        },
                        "secret": {
                            "type": "string",
                            "pattern": "^[A-Za-z0-9._-]{1,253}$",
                            "default": DEFAULT_SECRET,
                            "description": "the name of a secret of the webhook dispatcher",
                        },
                    },
                    "required": ["url"],
                    "additionalProperties": False,
                },
                {"type": "null"},
            ],
            "title": "Webhook",
            "description": "POST a signed notice here when the task settles (docs/webhooks.md): "
            "a URL, or {url, events, secret}",
        }
    ),
]


def _within_reach(moment: datetime, name: str) -> datetime:
    """``moment`` (naive means UTC), if it is within ``MAX_SECONDS`` of now: a time
    further off is a mistake, and near the ends of the calendar it cannot even be
    converted to UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        off = abs((moment - datetime.now(UTC)).total_seconds())
    except OverflowError:
        off = float("inf")
    if off > MAX_SECONDS:
        years = MAX_SECONDS // (365 * 24 * 3600)
        raise ValueError(f"{name} must be within {years} years of now, not {moment.isoformat()}")
    return moment


def _time(value: Any, name: str, *, seconds: bool) -> Any:
    """An ISO 8601 string as a datetime (naive means UTC); numbers only as seconds."""
    if value is None:
        return value
    if isinstance(value, datetime):
        return _within_reach(value, name)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{name} must be an ISO 8601 date and time, not {value!r}") from None
        return _within_reach(parsed, name)
    if seconds and isinstance(value, int | float) and not isinstance(value, bool):
        return value
    kind = "an ISO 8601 time or seconds from now" if seconds else "an ISO 8601 time"
    raise ValueError(f"{name} must be {kind}, not {value!r}")


class TaskRequest(BaseModel):
    """A task to enqueue: what ``send_task`` takes."""

    model_config = ConfigDict(extra="forbid")

    task: StrictStr = Field(min_length=1, max_length=500, description="the task's name")
    args: list[Any] = Field(default_factory=list, description="positional arguments")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments")
    queue: StrictStr | None = Field(default=None, description="queue (default: the default queue)")
    countdown: Seconds | None = Field(default=None, description="seconds to wait before running")
    eta: datetime | None = Field(default=None, description="when to run (ISO 8601; naive is UTC)")
    expires: datetime | Seconds | None = Field(
        default=None, description="when it no longer runs: ISO 8601 time, or seconds from now"
    )
    id: StrictStr | None = Field(
        default=None, description="task id (default: Idempotency-Key, or new)"
    )
    webhook: Webhook = None

    @field_validator("eta", mode="before")
    @classmethod
    def _eta(cls, value: Any) -> Any:
        return _time(value, "eta", seconds=False)

    @field_validator("expires", mode="before")
    @classmethod
    def _expires(cls, value: Any) -> Any:
        return _time(value, "expires", seconds=True)


class BatchRequest(BaseModel):
    """Several tasks in one request; each is checked and answered on its own."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class Accepted(BaseModel):
    """A task that was enqueued."""

    id: str
    queue: str
    location: str
    status: int = 202


class ItemProblem(BaseModel):
    """A batch item that was not enqueued, as problem details."""

    status: int
    title: str
    detail: str
    errors: list[dict[str, str]] = Field(default_factory=list)


class BatchResponse(BaseModel):
    """One result per item, in the order given."""

    results: list[Accepted | ItemProblem]


class TaskStatus(BaseModel):
    """A task's state as the results bucket holds it (PENDING when nothing is stored)."""

    id: str
    state: str
    task: str | None = None
    result: Any = None
    error: str | None = None
    exc_type: str | None = None
    traceback: str | None = None
    retries: int = 0
    date_done: datetime | None = None


class QueueInfo(BaseModel):
    """One queue now (``celeriac status``)."""

    queue: str
    waiting: int
    in_flight: int
    redelivered: int
    delayed: int
    dead_letters: int


class Queues(BaseModel):
    """The queues this token may use."""

    queues: list[QueueInfo]


class ProblemDocument(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] = Field(default_factory=list)
