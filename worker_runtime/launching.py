"""Messages launched by a finished task: the next chain step or a chord callback.

Their ids are known before they are published (fixed at submit time, or derived
from the parent's id), which makes publishing them again after a redelivery a no-op.
The step's options go through the SDK's one submission path, so a step is checked
exactly as ``apply_async`` would check it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from celeriac.protocol.envelope import Signature, TaskMessage
from celeriac.protocol.names import is_valid_task_id
from celeriac.submitting import Delayed, Links, prepare

# Namespace for ids derived from a parent's id (chain steps submitted without ids).
_DERIVED_IDS = uuid.UUID("5b7f61a2-2f3c-4c55-9a57-7a1f0b1c9e01")


def step_id(parent_id: str, step: Signature) -> str:
    """The task id of a chain step: its own, or one derived from its parent's id."""
    given = step.options.get("task_id")
    if isinstance(given, str) and is_valid_task_id(given):
        return given
    return str(uuid.uuid5(_DERIVED_IDS, parent_id))


def _parse_expires(value: Any) -> Any:
    # Carried on the wire as RFC 3339 text; anything else is checked as given.
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


def signature_message(
    step: Signature,
    *,
    task_id: str,
    parent: TaskMessage,
    args: list[Any],
    chain: list[Signature] | None = None,
) -> Delayed:
    """The message for ``step`` launched by ``parent`` (with its countdown)."""
    options = {
        **step.options,
        "task_id": task_id,
        "expires": _parse_expires(step.options.get("expires")),
        "headers": {**parent.headers, **(step.options.get("headers") or {})},
    }
    links = Links(parent_id=parent.id, root_id=parent.root_id or parent.id, chain=chain or ())
    return prepare(
        step.task,
        args,
        step.kwargs,
        options,
        call=f"the {step.task} step after {parent.task}",
        default_queue=parent.queue,
        links=links,
    )
