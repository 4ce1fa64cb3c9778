"""Turning message bytes into a TaskMessage, or into the reason it cannot be one.

Pure, so every kind of bad input is table-tested; the handler dead-letters a
rejection instead of crashing or dropping the message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from celeriac.protocol.envelope import DeadLetterReason, TaskMessage
from celeriac.protocol.names import PROTOCOL_VERSION


@dataclass(frozen=True)
class Rejection:
    """Why the bytes are not a task this worker can run."""

    reason: DeadLetterReason
    error: str
    # The task id and name, when the document had readable ones.
    task_id: str | None = None
    task: str | None = None


def decode_task(data: bytes) -> TaskMessage | Rejection:
    """Parse and validate a task envelope."""
    try:
        return TaskMessage.model_validate_json(data)  # one pass, for the common good case
    except ValidationError:
        return _rejection(data)


def _rejection(data: bytes) -> TaskMessage | Rejection:
    """Parse step by step, to say exactly what is wrong."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Rejection(DeadLetterReason.MALFORMED, f"not valid JSON: {exc}")
    if not isinstance(doc, dict):
        return Rejection(
            DeadLetterReason.MALFORMED, f"expected a JSON object, got {type(doc).__name__}"
        )
    task_id = doc.get("id") if isinstance(doc.get("id"), str) else None
    task = doc.get("task") if isinstance(doc.get("task"), str) else None
    version = doc.get("v", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        return Rejection(
            DeadLetterReason.UNSUPPORTED_VERSION,
            f"protocol version {version!r} is not supported; this worker speaks "
            f"v{PROTOCOL_VERSION}",
            task_id,
            task,
        )
    try:
        return TaskMessage.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}"
            for err in exc.errors()
        )
        return Rejection(
            DeadLetterReason.MALFORMED, f"invalid task envelope: {problems}", task_id, task
        )
