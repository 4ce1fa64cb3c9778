"""Task states as stored in the results bucket."""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    """Lifecycle of a task; the names match Celery's."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"

    @property
    def ready(self) -> bool:
        """True for the final states: nothing will change the result any more."""
        return self in READY_STATES


READY_STATES = frozenset({TaskState.SUCCESS, TaskState.FAILURE, TaskState.REVOKED})
