"""Task arguments on the wire: plain JSON, never pickled.

Every argument is checked before anything is sent, so a caller learns which
argument JSON cannot carry instead of a worker failing later.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


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
