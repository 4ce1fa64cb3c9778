"""An application's own exception module, allowed with ``result_exception_modules``."""

from __future__ import annotations


class OutOfStockError(Exception):
    """A shop's domain error, raised by a task and caught by type in the caller."""
