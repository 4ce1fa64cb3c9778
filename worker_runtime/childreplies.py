"""What a ``--pool processes`` child sends back after an attempt, and how the worker
reads it.

The reply is plain data (a kind and an :class:`ErrorInfo` without its exception) plus
the value or the exception pickled on their own. Whether they unpickle in the worker
depends on the user's classes (a module the worker cannot import, a constructor
that needs other arguments), and the attempt has run by then: a part that cannot be
read must not make the worker run the task again. An exception that cannot be read
is left out (its type name, message and traceback stay); a value that cannot be read
fails the attempt, as a value that cannot be sent does.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import replace
from typing import Any

from celeriac.worker_runtime.execution import ErrorInfo, Outcome

log = logging.getLogger(__name__)

# ("ok", None, the pickled value) or ("error", the error without its exception, the
# pickled exception or None).
Reply = tuple[str, ErrorInfo | None, bytes | None]


def unsendable(exc: BaseException) -> Reply:
    """The reply for a value that cannot be pickled in the child."""
    return "error", ErrorInfo("PicklingError", f"result cannot be sent back: {exc}"), None


def pack(kind: str, payload: Any) -> Reply:
    """The reply for ``("ok", value)`` or ``("error", ErrorInfo)``; pickling a value may
    raise (the caller sends :func:`unsendable` instead)."""
    if kind == "ok":
        return "ok", None, pickle.dumps(payload)
    info: ErrorInfo = payload
    if info.exception is None:
        return "error", info, None
    try:
        pickled: bytes | None = pickle.dumps(info.exception)
    except Exception:  # any class may refuse pickling
        pickled = None
    return "error", replace(info, exception=None), pickled


def unpack(reply: Reply) -> Outcome:
    """The outcome a reply stands for, whatever of it cannot be unpickled here."""
    kind, info, pickled = reply
    try:
        loaded = None if pickled is None else pickle.loads(pickled)
    except Exception as exc:  # a missing module or class, a constructor refusing its args
        if kind == "ok":
            text = f"result cannot be read back from the child process: {exc!r}"
            return Outcome(error=ErrorInfo("PicklingError", text))
        log.warning("the task's exception cannot be read back from the child process (%r); "
                    "keeping its type name and message", exc)  # fmt: skip
        loaded = None
    if kind == "ok":
        return Outcome(value=loaded)
    assert info is not None
    exception = loaded if isinstance(loaded, BaseException) else None
    return Outcome(error=replace(info, exception=exception))
