"""Turning message bytes into a TaskMessage (or, for a periodic task's fire, into its
PeriodicTask), or into the reason it cannot be one.

Pure, so every kind of bad input is table-tested; the handler dead-letters a
rejection instead of crashing or dropping the message. Parsing is strict, as the
protocol says: UTF-8 JSON, no NaN or Infinity, no key given twice in an object (a
second ``queue`` would otherwise silently win), no type coercion, times as RFC 3339
strings, and counts and delays within the envelope's bounds.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from celeriac.protocol.envelope import DeadLetterReason, TaskMessage, check_task_name
from celeriac.protocol.names import PROTOCOL_VERSION, is_valid_task_id
from celeriac.protocol.periodic import PeriodicTask


@dataclass(frozen=True)
class Rejection:
    """Why the bytes are not a task this worker can run."""

    reason: DeadLetterReason
    error: str
    # The task id and name, when the document had valid ones.
    task_id: str | None = None
    task: str | None = None


class _StrictJSONError(ValueError):
    """Valid JSON syntax that the protocol still refuses."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):  # rare: find which key, for the message
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _StrictJSONError(f"key {key[:80]!r} appears twice in one object")
            seen.add(key)
    return doc


def _no_constant(name: str) -> Any:
    raise _StrictJSONError(f"{name} is not a JSON number")


def parse_strict(data: bytes) -> Any:
    """The JSON document in ``data``, refusing what the protocol refuses.

    Raises ValueError (or RecursionError for absurd nesting) describing the problem.
    """
    return json.loads(
        data.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant
    )


def decode_task(data: bytes) -> TaskMessage | Rejection:
    """Parse and validate a task envelope; never raises."""
    doc = _load_object(data, "task envelope")
    if isinstance(doc, Rejection):
        return doc
    return _validate(doc)


def decode_periodic(data: bytes) -> PeriodicTask | Rejection:
    """Parse and validate the body of a periodic task's fire (a ``PeriodicTask``); never
    raises. Anything wrong is ``malformed``: a fire is not run, so no version is told apart."""
    doc = _load_object(data, "periodic task")
    if isinstance(doc, Rejection):
        return doc
    _, task = _readable(doc)
    try:
        # From the JSON text, checked above: strict JSON mode takes an enum's value
        # ("Forbid"), which strict Python mode would refuse as a plain string.
        return PeriodicTask.model_validate_json(data)
    except ValidationError as exc:
        error = f"invalid periodic task: {_problems(exc)}"
    except RecursionError:
        error = "invalid periodic task: nested too deeply"
    return Rejection(DeadLetterReason.MALFORMED, error, None, task)


def _load_object(data: bytes, what: str) -> dict[str, Any] | Rejection:
    """The JSON object in ``data``, or why it is not one (always ``malformed``)."""
    try:
        doc = parse_strict(data)
    except RecursionError:
        return Rejection(DeadLetterReason.MALFORMED, "not valid JSON: nested too deeply")
    except UnicodeDecodeError as exc:
        return Rejection(DeadLetterReason.MALFORMED, f"not valid JSON: not UTF-8 ({exc.reason})")
    except ValueError as exc:  # JSONDecodeError, the int-digits limit, the checks above
        problem = str(exc)
        if "integer string conversion" in problem:
            problem = f"a number has more than {sys.get_int_max_str_digits()} digits"
        return Rejection(DeadLetterReason.MALFORMED, f"not valid JSON: {problem[:300]}")
    if not isinstance(doc, dict):
        return Rejection(
            DeadLetterReason.MALFORMED,
            f"invalid {what}: expected a JSON object, got {type(doc).__name__}",
        )
    return doc


def _validate(doc: dict[str, Any]) -> TaskMessage | Rejection:
    task_id, task = _readable(doc)
    version = doc.get("v", PROTOCOL_VERSION)
    if type(version) is not int or version != PROTOCOL_VERSION:
        return Rejection(
            DeadLetterReason.UNSUPPORTED_VERSION,
            f"protocol version {_short(version)} is not supported; this worker speaks "
            f"v{PROTOCOL_VERSION}",
            task_id,
            task,
        )
    try:
        return TaskMessage.model_validate(doc)
    except ValidationError as exc:
        error = f"invalid task envelope: {_problems(exc)}"
    except RecursionError:
        error = "invalid task envelope: nested too deeply"
    return Rejection(DeadLetterReason.MALFORMED, error, task_id, task)


def _problems(exc: ValidationError) -> str:
    """The first ten problems pydantic found, each as ``field: what is wrong``."""
    return "; ".join(
        f"{'.'.join(_part(p) for p in err['loc']) or 'message'}: {err['msg']}"
        for err in exc.errors()[:10]
    )


def _readable(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    """The id and name of a rejected document, only when they are valid (they are logged)."""
    task_id, task = doc.get("id"), doc.get("task")
    task_id = task_id if isinstance(task_id, str) and is_valid_task_id(task_id) else None
    try:
        task = check_task_name(task) if isinstance(task, str) else None
    except ValueError:
        task = None
    return task_id, task


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}..."


def _part(part: Any) -> str:
    # A location may be a key from the message (headers.<key>): it goes into log lines.
    text = str(part)
    return text if text.isprintable() and len(text) <= 80 else _short(text)
