"""Completion webhooks on the wire: the target a task carries, the delivery job, signatures.

A task message may carry a ``webhook`` target (URL, events, the *name* of a secret,
never the secret). When the task settles in an event the target asks for, the worker
publishes a ``WebhookJob`` on ``celeriac.webhooks.<queue>`` (stream
``CELERIAC_WEBHOOKS``); ``celeriac webhooks`` delivers it as an HTTP POST signed the
Standard Webhooks way: ``webhook-signature: v1,<base64 HMAC-SHA256 of
"<id>.<timestamp>.<body>">``, one signature per secret (key rotation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

WEBHOOKS_STREAM = "CELERIAC_WEBHOOKS"
WEBHOOKS_SUBJECTS = "celeriac.webhooks.>"
#: The durable pull consumer every ``celeriac webhooks`` process shares.
WEBHOOKS_CONSUMER = "dispatcher"
#: The work stream's metadata key holding the queue's default target (TaskQueue
#: ``spec.webhooks``) as JSON; the operator writes it, workers read it.
QUEUE_WEBHOOK_KEY = "celeriac.io/webhook"
#: The secret name a target given as a bare URL uses.
DEFAULT_SECRET = "default"
SECRET_PREFIX = "whsec_"
MAX_URL_CHARS = 2048
# Names as a Kubernetes Secret's keys allow them.
_SECRET_NAME = re.compile(r"^[A-Za-z0-9._-]{1,253}$")


def webhook_subject(queue: str) -> str:
    """Where the delivery jobs of ``queue``'s tasks are published."""
    return f"celeriac.webhooks.{queue}"


class WebhookEvent(StrEnum):
    """When a delivery is made; the body's ``type`` is ``task.<event>``."""

    SUCCEEDED = "succeeded"
    # The task's final state is FAILURE (it ran out of retries, or cannot continue).
    FAILED = "failed"
    # The message went to its queue's dead-letter stream (for any reason).
    DEAD_LETTERED = "dead_lettered"


DEFAULT_EVENTS = (WebhookEvent.SUCCEEDED, WebhookEvent.FAILED)


class WebhookTarget(BaseModel):
    """Where and when to POST: what the ``webhook`` task option becomes."""

    # Not strict: the SDK validates plain strings into the events enum.
    model_config = ConfigDict(extra="ignore", frozen=True)

    url: str
    events: list[WebhookEvent] = Field(default_factory=lambda: list(DEFAULT_EVENTS))
    secret: str = DEFAULT_SECRET

    @field_validator("url")
    @classmethod
    def _valid_url(cls, v: str) -> str:
        check_url(v)
        return v

    @field_validator("events")
    @classmethod
    def _valid_events(cls, v: list[WebhookEvent]) -> list[WebhookEvent]:
        if not v:
            raise ValueError("must name at least one of " + _event_names())
        return list(dict.fromkeys(v))

    @field_validator("secret")
    @classmethod
    def _valid_secret(cls, v: str) -> str:
        if not _SECRET_NAME.match(v):
            raise ValueError(
                f"must be a secret's name (1-253 letters, digits, '.', '_', '-'), not {v[:80]!r}"
            )
        return v


def _event_names() -> str:
    return ", ".join(e.value for e in WebhookEvent)


def check_url(url: str) -> None:
    """Raise ValueError (a sentence about the URL) unless ``url`` is an absolute http or
    https URL with a host."""
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"must be at most {MAX_URL_CHARS} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host, not {url[:80]!r}")
    if parts.username or parts.password:
        raise ValueError("must not carry a user name or password")
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        raise ValueError(f"has an invalid port: {url[:80]!r}") from None


def webhook_target(value: Any) -> WebhookTarget:
    """The target the ``webhook`` option describes: a URL, or a dict {url, events, secret}.

    Raises TypeError or ValueError with a sentence starting ``webhook``.
    """
    if isinstance(value, WebhookTarget):
        return value
    if isinstance(value, str):
        value = {"url": value}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"webhook must be a URL or a dict with url, events, secret; not {type(value).__name__}"
        )
    unknown = sorted(set(value) - {"url", "events", "secret"})
    if unknown:
        raise TypeError(f"webhook: unknown key(s) {', '.join(map(repr, unknown))}; "
                        "use url, events, secret")  # fmt: skip
    try:
        return WebhookTarget.model_validate(dict(value))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "enum":
            msg = f"use {_event_names()}"
        raise ValueError(f"webhook {where}: {msg}") from None


class WebhookJob(BaseModel):
    """One delivery to make: published by the worker, consumed by ``celeriac webhooks``.

    ``body`` is the exact JSON text POSTed (and signed); ``id`` is the ``webhook-id``
    header, the same on every attempt so the receiver can drop duplicates.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = 1
    id: str
    queue: str
    task_id: str
    task: str
    event: WebhookEvent
    target: WebhookTarget
    body: str
    created: datetime

    def dumps(self) -> bytes:
        """Compact JSON bytes."""
        return self.model_dump_json().encode()


class SecretError(ValueError):
    """A webhook secret is not ``whsec_`` followed by base64."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise SecretError(f"a webhook secret must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"a webhook secret must be {SECRET_PREFIX!r} then base64") from None
    if len(key) < 16:
        raise SecretError("a webhook secret must hold at least 16 bytes (24 base64 characters)")
    return key


def signature_header(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<sig>`` per key, separated by spaces."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys
    )
