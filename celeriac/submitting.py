"""Turn a submit call's arguments into a validated task envelope.

Everything a caller can get wrong (queue name, task id, arguments that JSON cannot
carry, contradictory timing options) is rejected here, before anything is sent,
with an error that names the culprit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from celeriac.current import calling_task
from celeriac.protocol import names
from celeriac.protocol.arguments import check_arguments
from celeriac.protocol.envelope import (
    MAX_CANVAS_DEPTH,
    ChordRef,
    GroupStep,
    Signature,
    TaskMessage,
    canvas_depth,
)
from celeriac.protocol.webhooks import webhook_target

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
            "not starting with '.' or 'periodic.' (reserved)"
        )
    return task_id


def absolute_time(value: datetime | float | None, what: str) -> datetime | None:
    """A datetime (naive means UTC) or a number of seconds from now, as an aware UTC time."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if not _is_number(value):
        raise TypeError(f"{what} must be a datetime or a number of seconds, not {value!r}")
    if abs(value) > MAX_SECONDS:
        raise ValueError(f"{what} must be within {MAX_SECONDS} seconds of now, not {value!r}")
    return datetime.now(UTC) + timedelta(seconds=float(value))


# What the continuation of one message (its chain, chord, links) may take once encoded:
# a quarter of NATS's default largest message, leaving room for the arguments.
MAX_CANVAS_BYTES = 256 * 1024


@runtime_checkable
class Linkable(Protocol):
    """What ``link=`` and ``link_error=`` take: a signature (or a chain) in the SDK."""

    def to_wire(self) -> Signature:
        """The signature's JSON form."""
        ...


@dataclass(frozen=True)
class Links:
    """Where a message sits in a canvas: set by canvas and the worker, never by callers."""

    parent_id: str | None = None
    root_id: str | None = None
    group_id: str | None = None
    group_index: int | None = None
    chord: ChordRef | None = None
    chain: Sequence[Signature | GroupStep] = ()


#: A message submitted on its own, outside any canvas.
NO_LINKS = Links()


@dataclass(frozen=True)
class Submission:
    """Checked options of one message: what ``build_message`` turns into an envelope."""

    task: str
    queue: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    task_id: str | None = None
    expires: datetime | float | None = None
    headers: Mapping[str, str] | None = None
    links: Links = NO_LINKS
    ignore_result: bool = False
    max_retries: int | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    # A URL or {url, events, secret}: see protocol.webhooks.
    webhook: Any = None
    # Signatures sent when the task succeeds / fails for good.
    link: Sequence[Signature] = ()
    link_error: Sequence[Signature] = ()


@dataclass(frozen=True)
class Delayed:
    """A task and when it is due (None: now); the unit of a batch publish."""

    message: TaskMessage
    countdown: float | None = None
    eta: datetime | None = None


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


# Longer than any task waits or runs, and well inside what a datetime can hold.
MAX_SECONDS = 100 * 365 * 24 * 3600


def _check_seconds(name: str, value: Any, *, positive: bool) -> None:
    if not _is_number(value) or value < 0 or (positive and value == 0) or value > MAX_SECONDS:
        kind = "positive" if positive else "non-negative"
        raise ValueError(
            f"{name} must be a {kind} number of seconds up to {MAX_SECONDS}, not {value!r}"
        )


def _check_headers(value: Any) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(f"headers must be a dict of strings, not {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise TypeError(f"headers must map strings to strings, got {key!r}: {item!r}")


def _check_queue(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"queue must be a string, not {value!r}")
    names.check_queue_name(value)


def _check_eta(name: str, value: Any) -> None:
    if not isinstance(value, datetime):
        raise TypeError(f"eta must be a datetime, not {value!r}")


def _check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, not {value!r}")


def _check_delay(name: str, value: Any) -> None:
    _check_seconds(name, value, positive=False)


def _check_limit(name: str, value: Any) -> None:
    _check_seconds(name, value, positive=True)


def _check_links(name: str, value: Any) -> list[Any]:
    """``link``/``link_error``: one signature or a list of them (converted when sent)."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    for item in items:
        if not isinstance(item, Signature | Linkable):
            raise TypeError(
                f"{name} takes a task signature (task.s(...)) or a list of them, not {item!r}"
            )
    return items


def wire_links(name: str, value: Any) -> list[Signature]:
    """``link``/``link_error`` as the JSON signatures a message carries."""
    return [
        item if isinstance(item, Signature) else item.to_wire()
        for item in _check_links(name, value)
    ]


# Each option's check on its own value; ``check_options`` checks how they combine.
_CHECKS: dict[str, Callable[[str, Any], object]] = {
    "queue": _check_queue,
    "task_id": lambda _, value: check_task_id(value),
    "countdown": _check_delay,
    "eta": _check_eta,
    "expires": lambda name, value: absolute_time(value, name),
    "headers": lambda _, value: _check_headers(value),
    "ignore_result": _check_flag,
    "max_retries": _check_count,
    "time_limit": _check_limit,
    "soft_time_limit": _check_limit,
    "webhook": lambda _, value: webhook_target(value),
    "link": _check_links,
    "link_error": _check_links,
}

#: Delivery options every submit call and every signature accepts, in every spelling.
OPTIONS = frozenset(_CHECKS)


def check_options(options: Mapping[str, Any], call: str) -> dict[str, Any]:
    """The delivery options of ``call`` without the unset (None) ones, every one checked.

    Raises TypeError for an unknown option or a wrong type and ValueError for a value
    out of range, naming the option: ``unknown option 'priority' for apply_async``.
    """
    given = {name: value for name, value in options.items() if value is not None}
    for name, value in given.items():
        check = _CHECKS.get(name)
        if check is None:
            known = ", ".join(sorted(OPTIONS))
            raise TypeError(f"unknown option {name!r} for {call}; known options: {known}")
        check(name, value)
    countdown, eta, expires = given.get("countdown"), given.get("eta"), given.get("expires")
    if countdown is not None and eta is not None:
        raise ValueError(f"{call}: give countdown or eta, not both")
    if expires is not None and (countdown is not None or eta is not None):
        due = due_time(countdown, eta)
        ends = absolute_time(expires, "expires")
        if due is not None and ends is not None and ends <= due:
            raise ValueError(f"{call}: expires ({ends.isoformat()}) must be after the task is due "
                             f"({due.isoformat()})")  # fmt: skip
    return given


def due_time(countdown: float | None, eta: datetime | None) -> datetime | None:
    """When a task is due: ``eta`` (naive means UTC), else now + ``countdown``, else None."""
    if eta is not None:
        return eta if eta.tzinfo is not None else eta.replace(tzinfo=UTC)
    if countdown is not None:
        return datetime.now(UTC) + timedelta(seconds=countdown)
    return None


def prepare(
    task: str,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    options: Mapping[str, Any],
    *,
    call: str,
    default_queue: str,
    links: Links = NO_LINKS,
) -> Delayed:
    """The one way a submit call becomes a message: check ``options``, build the envelope.

    ``delay``, ``apply_async``, ``send_task``, signatures, canvas and ``send_many`` (and
    the worker launching a chain's next step) all come through here.
    """
    opts = check_options(options, call)
    countdown, eta = opts.pop("countdown", None), opts.pop("eta", None)
    queue = opts.pop("queue", None) or default_queue
    for name in ("link", "link_error"):
        if name in opts:
            opts[name] = wire_links(name, opts[name])
    sub = Submission(
        task=task, queue=queue, args=args or (), kwargs=kwargs or {}, links=links, **opts
    )
    return Delayed(build_message(sub), countdown, eta)


def check_canvas(task_id: str, sub: Submission, links: Links) -> None:
    """Refuse a continuation (chain, chord, links) nested or sized beyond the bounds.

    A message launched by a finished task (``parent_id`` set) carries a part of its
    parent's canvas, measured when that was submitted: give or take a chord's few
    bytes, which must not refuse it now. The envelope still refuses too deep a one.
    """
    if links.parent_id is not None:
        return
    what = f"the canvas sent with task {task_id} ({sub.task})"
    depth = canvas_depth(links.chain, links.chord, sub.link, sub.link_error)
    if depth > MAX_CANVAS_DEPTH:
        raise ValueError(
            f"{what} is nested {depth} levels deep; at most {MAX_CANVAS_DEPTH} "
            "(MAX_CANVAS_DEPTH) are allowed: flatten it, or send the inner part from a task"
        )
    parts: list[Signature | GroupStep] = [*links.chain, *sub.link, *sub.link_error]
    if links.chord is not None:
        parts.append(links.chord.callback)
    size = sum(len(part.dumps()) for part in parts)
    if size > MAX_CANVAS_BYTES:
        raise ValueError(
            f"{what} takes {size} bytes encoded, more than the {MAX_CANVAS_BYTES} "
            "(MAX_CANVAS_BYTES) one message may carry: pass smaller arguments to the "
            "later steps, or send part of the work from a task"
        )


def build_message(sub: Submission) -> TaskMessage:
    """The envelope for ``sub`` (options already checked); raises on arguments JSON can't carry."""
    names.check_queue_name(sub.queue)
    task_id = check_task_id(sub.task_id) if sub.task_id is not None else new_task_id()
    check_arguments(sub.task, sub.args, sub.kwargs)
    headers = dict(sub.headers or {})
    fields: dict[str, Any] = {"id": task_id, "task": sub.task, "queue": sub.queue}
    # Only what differs from the envelope's defaults: every field passed costs a
    # validation, and an omitted one takes the same default, so the bytes are the same.
    if sub.args:
        fields["args"] = list(sub.args)
    if sub.kwargs:
        fields["kwargs"] = dict(sub.kwargs)
    if headers:
        fields["headers"] = headers
    links = sub.links
    if links.chain or links.chord is not None or sub.link or sub.link_error:
        check_canvas(task_id, sub, links)
    if links.chain:
        fields["chain"] = list(links.chain)
    if sub.link:
        fields["link"] = list(sub.link)
    if sub.link_error:
        fields["link_error"] = list(sub.link_error)
    if sub.ignore_result is not False:
        fields["ignore_result"] = sub.ignore_result
    parent_id, root_id = links.parent_id, links.root_id
    if parent_id is None and (caller := calling_task()) is not None:
        # Sent by a task's code: its child, in its workflow.
        parent_id, root_id = caller.id, root_id or caller.root_id
    optional = {
        "expires": absolute_time(sub.expires, "expires"),
        "parent_id": parent_id,
        "root_id": root_id,
        "group_id": links.group_id,
        "group_index": links.group_index,
        "chord": links.chord,
        "max_retries": sub.max_retries,
        "time_limit": sub.time_limit,
        "soft_time_limit": sub.soft_time_limit,
        "webhook": webhook_target(sub.webhook) if sub.webhook is not None else None,
    }
    fields.update((key, value) for key, value in optional.items() if value is not None)
    return TaskMessage(**fields)
