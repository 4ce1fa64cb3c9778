"""RFC 9457 problem details: every refusal the gateway answers, as a pure value.

A problem names its status, a title, one sentence of detail and, when the request
itself is at fault, an ``errors`` list naming each field (``countdown``,
``tasks[2].queue``, ``Idempotency-Key``) with what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://celeriac.dev/problems/"


@dataclass(frozen=True)
class FieldError:
    """What is wrong with one field of a request."""

    field: str
    detail: str


# Not frozen: raising sets the exception's __traceback__.
@dataclass(eq=False)
class Problem(Exception):  # noqa: N818 - RFC 9457 names it a problem
    """A refusal: raised in a route, answered as ``application/problem+json``."""

    status: int
    kind: str
    title: str
    detail: str
    errors: Sequence[FieldError] = field(default_factory=tuple)
    headers: Mapping[str, str] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        """The JSON body."""
        body: dict[str, Any] = {
            "type": TYPE_BASE + self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = [{"field": e.field, "detail": e.detail} for e in self.errors]
        return body


def invalid(errors: Iterable[FieldError], detail: str | None = None) -> Problem:
    """422: the request is well-formed JSON but some fields are wrong."""
    found = tuple(errors)
    fields = ", ".join(dict.fromkeys(e.field for e in found))
    return Problem(
        422, "invalid-request", "Invalid request",
        detail or f"the request has invalid field(s): {fields}", found,
    )  # fmt: skip


def malformed(detail: str) -> Problem:
    """400: the body is not JSON at all."""
    return Problem(400, "malformed-json", "Malformed JSON", detail, (FieldError("body", detail),))


def unauthorized(detail: str) -> Problem:
    """401: no token, or one that is not configured."""
    return Problem(401, "unauthorized", "Unauthorized", detail,
                   headers={"WWW-Authenticate": 'Bearer realm="celeriac gateway"'})  # fmt: skip


def forbidden(queue: str) -> Problem:
    """403: the token may not use ``queue``."""
    return Problem(403, "forbidden-queue", "Queue not allowed",
                   f"this token may not use queue {queue!r}",
                   (FieldError("queue", f"not allowed for this token: {queue!r}"),))  # fmt: skip


def unknown_queue(queue: str, where: str = "queue") -> Problem:
    """422: nothing consumes ``queue``: it has no stream."""
    return invalid(
        [FieldError(where, f"unknown queue {queue!r}: it has no stream")],
        f"unknown queue {queue!r}: create it with a TaskQueue resource first",
    )


def too_large(limit: int) -> Problem:
    """413: the body is over the configured limit."""
    return Problem(413, "body-too-large", "Request body too large",
                   f"the request body is over the limit of {limit} bytes (--max-body)",
                   (FieldError("body", f"over {limit} bytes"),))  # fmt: skip


def unavailable(detail: str) -> Problem:
    """503: NATS cannot be reached, or did not confirm; trying again later may work."""
    return Problem(503, "nats-unavailable", "Service unavailable", detail,
                   headers={"Retry-After": "5"})  # fmt: skip


def not_found(detail: str) -> Problem:
    """404: no such route or hook."""
    return Problem(404, "not-found", "Not found", detail)


def location(loc: Sequence[int | str]) -> str:
    """A field's name from a pydantic error location: ``tasks[2].eta``, ``wait``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        kind = parts.pop(0)
        if kind == "header" and parts:
            return "-".join(w.capitalize() for w in str(parts[0]).split("_"))
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += ("." if name else "") + part
    return name or "body"


def from_validation(errors: Sequence[Mapping[str, Any]]) -> Problem:
    """The problem for FastAPI's (pydantic's) validation errors."""
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "not valid JSON")
            return malformed(f"the request body is not valid JSON: {reason}")
    found = []
    for error in errors:
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        loc = tuple(error.get("loc", ()))
        if error.get("type") == "missing":
            message = "required"
        elif loc == ("body",) and isinstance(error.get("input"), str | bytes):
            # FastAPI reads a body as text unless it is sent as JSON.
            message = "expected a JSON object; send it with Content-Type: application/json"
        found.append(FieldError(location(loc), message))
    return invalid(found)
