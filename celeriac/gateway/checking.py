"""Which field of a task request the SDK refused, so the problem can name it.

The SDK's own checks (``celeriac.submitting``) decide what is refused, so the
gateway and ``send_task`` refuse the same things; this only finds the culprit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from celeriac.gateway.problems import FieldError
from celeriac.protocol.arguments import check_arguments
from celeriac.submitting import check_options

# The SDK's webhook sentences: "webhook url: ...", "webhook events.0: ...".
_WEBHOOK_WHERE = re.compile(r"^webhook ([\w.]+):")

# Option of send_task -> the field of the request that carries it.
FIELDS = {"task_id": "id", "queue": "queue", "countdown": "countdown", "eta": "eta",
          "expires": "expires"}  # fmt: skip


def culprits(
    task: str, args: Any, kwargs: Any, options: Mapping[str, Any], exc: Exception
) -> list[FieldError]:
    """The fields behind ``exc``, raised by the SDK for this request."""
    return _options(options) or _arguments(task, args, kwargs) or [_combination(exc)]


def _options(options: Mapping[str, Any]) -> list[FieldError]:
    """Each option the SDK refuses on its own."""
    found = []
    for option, value in options.items():
        if value is None:
            continue
        try:
            check_options({option: value}, "POST /v1/tasks")
        except (TypeError, ValueError) as alone:
            field = FIELDS.get(option, option)
            if option == "webhook":
                field = webhook_field(str(alone))
            found.append(FieldError(field, str(alone)))
    return found


def webhook_field(sentence: str) -> str:
    """The field of the ``webhook`` option an SDK refusal names: ``webhook.url``,
    ``webhook.events[0]``; ``webhook`` itself for a wrong type or an unknown key."""
    where = _WEBHOOK_WHERE.match(sentence)
    if where is None:
        return "webhook"
    field = "webhook"
    for part in where.group(1).split("."):
        field += f"[{part}]" if part.isdigit() else f".{part}"
    return field


def _arguments(task: str, args: Any, kwargs: Any) -> list[FieldError]:
    """``args`` or ``kwargs``, when they cannot travel."""
    try:
        check_arguments(task, args, kwargs)
    except (TypeError, ValueError) as bad:
        where = "kwargs" if "keyword" in str(bad) or "kwargs" in str(bad) else "args"
        return [FieldError(where, str(bad))]
    # JSON, but not UTF-8: a lone surrogate ("\ud800") escapes the argument check.
    for where, value in (("args", args), ("kwargs", kwargs)):
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            return [
                FieldError(where, "holds a string that is not valid Unicode (a lone surrogate)")
            ]
    return []


def _combination(exc: Exception) -> FieldError:
    """Options fine alone but not together (countdown with eta, expiring too early), or
    a task name the envelope refuses."""
    text = str(exc)
    if "expires" in text:
        return FieldError("expires", text)
    if "countdown or eta" in text:
        return FieldError("eta", text)
    if isinstance(exc, ValidationError):
        return FieldError("task", str(exc.errors()[0]["msg"]).removeprefix("Value error, "))
    return FieldError("task", text)
