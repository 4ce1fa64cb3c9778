"""A user's own exceptions, in a module of their own, for the signal tests.

``TimeoutError`` shares its name with Python's on purpose: the worker must hand
signal receivers and hooks this class, never ``builtins.TimeoutError``.
"""

from __future__ import annotations

import threading


class TimeoutError(Exception):  # the same name as the builtin, on purpose
    """A user's error that cannot be pickled (it holds a lock), so a ``--pool
    processes`` child cannot send it back to the worker as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()
