"""The operator's log lines: kopf's own setup, in text or in JSON.

kopf installs one stderr handler on the root logger (``kopf.configure``) and its
per-object loggers put a reference to the object on each record (``k8s_ref``).
``text`` keeps kopf's format; ``json`` swaps that handler's formatter for
:class:`celeriac.logformat.JsonFormatter` and names the object the line concerns
(``kind``, ``namespace``, ``name``), as the worker names the task.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from celeriac.logformat import DEFAULT_LOG_FORMAT, JsonFormatter, log_format_default


def log_format_from_env(env: Mapping[str, str]) -> str:
    """The format ``$CELERIAC_LOG_FORMAT`` names; ValueError when it is not text or json."""
    return log_format_default(env)


def object_fields(record: logging.LogRecord) -> Mapping[str, Any]:
    """The Kubernetes object a kopf record concerns, when kopf says which."""
    ref = getattr(record, "k8s_ref", None)
    if not isinstance(ref, Mapping):
        return {}
    return {key: ref[key] for key in ("kind", "namespace", "name") if ref.get(key)}


def configure_logging(
    log_format: str = DEFAULT_LOG_FORMAT, *, verbose: bool = False, debug: bool = False
) -> None:
    """Set up logging as kopf does, then, for ``json``, format kopf's handler as JSON lines."""
    root = logging.getLogger()
    before = set(root.handlers)
    kopf.configure(verbose=verbose, debug=debug)
    if log_format != "json":
        return
    for handler in root.handlers:
        if handler not in before:  # the handler kopf just installed
            handler.setFormatter(JsonFormatter(object_fields))
