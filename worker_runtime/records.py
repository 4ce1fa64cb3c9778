"""The SUCCESS result document, serialized once on the worker's hot path.

A task's return value must be plain JSON (what ``json.dumps`` accepts, without NaN
or infinities, which other languages cannot parse): pydantic would quietly turn a
datetime or a set into something else. Building the record
as a dict and dumping it once both checks the value and produces the bytes that
``ResultRecord`` reads back.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from celeriac.protocol.states import TaskState

_SUCCESS = TaskState.SUCCESS.value
# Built once: json.dumps with options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def success_document(task: str, value: Any, *, retries: int, worker: str) -> bytes:
    """The SUCCESS ``ResultRecord`` of ``task`` as JSON bytes.

    Raises ``TypeError`` or ``ValueError`` when ``value`` is not JSON-serializable.
    """
    record = {
        "state": _SUCCESS,
        "task": task,
        "result": value,
        "retries": retries,
        "worker": worker,
        "date_done": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    return _ENCODER.encode(record).encode()
