"""Log line formats shared by ``celeriac worker`` and ``celeriac operator``.

``text`` is the human format each command always had; ``json`` writes one JSON
object per line for log collectors: ``time`` (RFC 3339, UTC), ``level``,
``logger``, ``message``, the fields the command adds (task or Kubernetes object),
and ``exc`` with the formatted traceback when an exception is logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

LOG_FORMAT_ENV = "CELERIAC_LOG_FORMAT"
LOG_FORMATS = ("text", "json")
DEFAULT_LOG_FORMAT = "text"

# The fields a command adds to a record's JSON object (e.g. the task it concerns).
RecordFields = Callable[[logging.LogRecord], Mapping[str, Any]]


def log_format_default(env: Mapping[str, str]) -> str:
    """The format ``$CELERIAC_LOG_FORMAT`` names (``text`` when unset or empty).

    ValueError names the variable when it holds something else.
    """
    value = env.get(LOG_FORMAT_ENV, "").strip().lower() or DEFAULT_LOG_FORMAT
    if value not in LOG_FORMATS:
        raise ValueError(f"${LOG_FORMAT_ENV} must be text or json, not {value!r}")
    return value


def rfc3339(timestamp: float) -> str:
    """Unix seconds as an RFC 3339 UTC time with milliseconds."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _no_fields(_: logging.LogRecord) -> Mapping[str, Any]:
    return {}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in values are escaped)."""

    def __init__(self, fields: RecordFields = _no_fields) -> None:
        super().__init__()
        self._fields = fields

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(self._fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: a field that is not JSON (an object in `extra`) still logs.
        return json.dumps(line, ensure_ascii=False, default=str)
