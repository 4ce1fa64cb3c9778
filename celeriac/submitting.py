"""Turn a submit call's arguments into a validated task envelope.

Everything a caller can get wrong (queue name, task id, arguments that JSON cannot
carry, contradictory timing options) is rejected here, before anything is sent,
with an error that names the culprit.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from celeriac.protocol import names
from celeriac.protocol.envelope import ChordRef, Signature, TaskMessage

# The variant nibble of a version 4 UUID is 10xx: one of these, picked by two random bits.
_VARIANT = "89ab"


def new_task_id() -> str:
    """A fresh random task id: a version 4 UUID in its canonical string form.

    Built from ``os.urandom`` like ``uuid.uuid4()``, without the ``UUID`` object: a batch
    submit makes one per task and the object costs more than the randomness.
    """
    h = os.urandom(16).hex()
    variant = _VARIANT[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


def check_task_id(task_id: str) -> str:
    """Return ``task_id`` or raise ValueError saying what an id may contain."""
    if not isinstance(task_id, str) or not names.is_valid_task_id(task_id):
        raise ValueError(
            f"invalid task id {task_id!r}: use 1-200 letters, digits, '-', '_', '=' or '.', "
            "not starting with '.'"
        )
    return task_id


def check_json(value: Any, what: str) -> None:
    """Raise TypeError naming ``what`` when ``value`` is not plain JSON (never pickled)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{what} is not JSON-serializable ({type(value).__name__}): {exc}"
        ) from None


def check_arguments(task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Check every positional and keyword argument of ``task`` is JSON."""
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise TypeError(f"args of {task} must be a list or tuple, not {type(args).__name__}")
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"kwargs of {task} must be a dict, not {type(kwargs).__name__}")
    if not args and not kwargs:
        return
    try:
        # One dump of everything is much cheaper than one per argument. If it fails, the
        # per-argument check finds the culprit (or accepts, as it alone decides).
        json.dumps((args, kwargs), allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        _check_each(task, args, kwargs)
        return
    # json turns int/float/bool/None keys into strings, so it does not check them.
    for key in kwargs:
        if not isinstance(key, str):
            raise TypeError(f"keyword names of {task} must be strings, got {key!r}")


def _check_each(task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Check the arguments one by one, raising for the first that is not JSON."""
    for index, arg in enumerate(args):
        check_json(arg, f"argument {index} of {task}")
    for key, arg in kwargs.items():
        if not isinstance(key, str):
            raise TypeError(f"keyword names of {task} must be strings, got {key!r}")
        check_json(arg, f"argument {key!r} of {task}")


def absolute_time(value: datetime | float | None, what: str) -> datetime | None:
    """A datetime (naive means UTC) or a number of seconds from now, as an aware UTC time."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"{what} must be a datetime or a number of seconds, not {value!r}")
    return datetime.now(UTC) + timedelta(seconds=float(value))


@dataclass(frozen=True)
class Submission:
    """Validated options of one submit call (what ``apply_async`` accepts)."""

    task: str
    queue: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    task_id: str | None = None
    countdown: float | None = None
    eta: datetime | None = None
    expires: datetime | float | None = None
    headers: Mapping[str, str] | None = None
    parent_id: str | None = None
    root_id: str | None = None
    group_id: str | None = None
    group_index: int | None = None
    chord: ChordRef | None = None
    chain: Sequence[Signature] = ()
    ignore_result: bool = False
    max_retries: int | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None


def check_timing(countdown: float | None, eta: datetime | None) -> None:
    """countdown and eta are alternatives, and a countdown is a non-negative number."""
    if countdown is not None and eta is not None:
        raise ValueError("give countdown or eta, not both")
    if countdown is not None and (
        isinstance(countdown, bool)
        or not isinstance(countdown, int | float)
        or not math.isfinite(countdown)
        or countdown < 0
    ):
        raise ValueError(f"countdown must be a non-negative number of seconds, not {countdown!r}")
    if eta is not None and not isinstance(eta, datetime):
        raise TypeError(f"eta must be a datetime, not {eta!r}")


def build_message(sub: Submission) -> TaskMessage:
    """The envelope for ``sub``; raises ValueError/TypeError on bad input."""
    names.check_queue_name(sub.queue)
    task_id = check_task_id(sub.task_id) if sub.task_id is not None else new_task_id()
    check_arguments(sub.task, sub.args, sub.kwargs)
    check_timing(sub.countdown, sub.eta)
    headers = dict(sub.headers or {})
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"headers must map strings to strings, got {key!r}: {value!r}")
    fields: dict[str, Any] = {"id": task_id, "task": sub.task, "queue": sub.queue}
    # Only what differs from the envelope's defaults: every field passed costs a
    # validation, and an omitted one takes the same default, so the bytes are the same.
    if sub.args:
        fields["args"] = list(sub.args)
    if sub.kwargs:
        fields["kwargs"] = dict(sub.kwargs)
    if headers:
        fields["headers"] = headers
    if sub.chain:
        fields["chain"] = list(sub.chain)
    if sub.ignore_result is not False:
        fields["ignore_result"] = sub.ignore_result
    optional = {
        "expires": absolute_time(sub.expires, "expires"),
        "parent_id": sub.parent_id,
        "root_id": sub.root_id,
        "group_id": sub.group_id,
        "group_index": sub.group_index,
        "chord": sub.chord,
        "max_retries": sub.max_retries,
        "time_limit": sub.time_limit,
        "soft_time_limit": sub.soft_time_limit,
    }
    fields.update((key, value) for key, value in optional.items() if value is not None)
    return TaskMessage(**fields)
