"""Messages launched by a finished task: the next chain step or a chord callback.

Their ids are known before they are published (fixed at submit time, or derived
from the parent's id), which makes publishing them again after a redelivery a no-op.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from celeriac.protocol.envelope import Signature, TaskMessage
from celeriac.submitting import Submission, absolute_time, build_message

# Namespace for ids derived from a parent's id (chain steps submitted without ids).
_DERIVED_IDS = uuid.UUID("5b7f61a2-2f3c-4c55-9a57-7a1f0b1c9e01")


def step_id(parent_id: str, step: Signature) -> str:
    """The task id of a chain step: its own, or one derived from its parent's id."""
    given = step.options.get("task_id")
    return str(given) if given else str(uuid.uuid5(_DERIVED_IDS, parent_id))


def _parse_expires(value: Any) -> datetime | float | None:
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return absolute_time(value, "expires")


def signature_message(
    step: Signature, *, task_id: str, parent: TaskMessage, args: list[Any], **extra: Any
) -> tuple[TaskMessage, float | None]:
    """The message for ``step`` launched by ``parent``, and its countdown."""
    opts = step.options
    sub = Submission(
        task=step.task,
        queue=opts.get("queue") or parent.queue,
        args=args,
        kwargs=step.kwargs,
        task_id=task_id,
        expires=_parse_expires(opts.get("expires")),
        headers={**parent.headers, **(opts.get("headers") or {})},
        parent_id=parent.id,
        root_id=parent.root_id or parent.id,
        ignore_result=bool(opts.get("ignore_result", False)),
        **extra,
    )
    countdown = opts.get("countdown")
    return build_message(sub), float(countdown) if countdown is not None else None
