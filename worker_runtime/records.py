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
from celeriac.worker_runtime.deadletters import HEADROOM
from celeriac.worker_runtime.execution import MAX_ERROR_CHARS, ErrorInfo

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


def storable_success(
    task: str, value: Any, *, retries: int, worker: str, max_payload: int
) -> bytes | ErrorInfo:
    """The SUCCESS record's bytes, or the error that makes ``value`` unstorable: not plain
    JSON, or too large for one NATS message (with ``HEADROOM`` left for the headers)."""
    try:
        document = success_document(task, value, retries=retries, worker=worker)
    except (TypeError, ValueError, RecursionError) as exc:
        problem = f"the task's result ({type(value).__name__}) is not JSON-serializable: {exc}"
        return ErrorInfo("TypeError", problem[:MAX_ERROR_CHARS])
    if len(document) > max_payload - HEADROOM:
        return ErrorInfo(
            "ResultTooLarge",
            f"result too large: {human_size(len(document))}, max payload "
            f"{human_size(max_payload)} (store big data elsewhere and return a reference to it)",
        )
    return document


def human_size(count: int) -> str:
    """``1 MiB``, ``5.2 MB``, ``12.0 kB``: sizes as a person reads them in an error."""
    if count >= 1 << 20 and count % (1 << 20) == 0:
        return f"{count >> 20} MiB"
    if count >= 1_000_000:
        return f"{count / 1e6:.1f} MB"
    return f"{count / 1e3:.1f} kB" if count >= 1000 else f"{count} B"
