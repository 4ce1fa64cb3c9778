"""Exceptions users of Celeriac catch or raise, shared by the SDK and the worker runtime."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


class CeleriacError(Exception):
    """Base class of every error Celeriac raises on purpose."""


class NatsRefusedError(CeleriacError):
    """NATS refused the connection: wrong or missing credentials, or TLS that failed.

    Trying again does not help until the credentials or certificates change.
    """


class Retry(Exception):  # noqa: N818 - the Celery name users expect
    """Raised inside a task (usually through ``self.retry()``) to run it again later.

    ``countdown`` overrides the task's ``default_retry_delay``; ``exc`` is the error
    that caused the retry and is what gets recorded (and dead-lettered after the last
    retry); ``max_retries`` overrides the task's for this retry.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        countdown: float | None = None,
        exc: BaseException | None = None,
        max_retries: int | None = None,
    ) -> None:
        self.countdown = countdown
        self.exc = exc
        self.max_retries = max_retries
        text = message or (f"retry requested: {exc!r}" if exc is not None else "retry requested")
        super().__init__(text)


class MaxRetriesExceededError(CeleriacError):
    """A task asked for a retry (``self.retry()``) with no retries left.

    Raised inside the task, so it can be caught there; uncaught, the task ends
    ``FAILURE`` with this error. ``self.retry(exc=...)`` raises ``exc`` instead.
    """


@dataclass(frozen=True)
class ExceptionInfo:
    """What the failure hooks of a task class receive as ``einfo``.

    ``exception`` is the exception the task raised (in the processes pool, a copy
    made in the child; a stand-in when it could not be copied or the error did not
    come from an exception, such as a hard time limit).
    """

    exception: BaseException
    traceback: str

    @property
    def type(self) -> type[BaseException]:
        """The exception's class."""
        return type(self.exception)

    def __str__(self) -> str:
        return self.traceback


class TaskRevokedError(CeleriacError):
    """The task was revoked (or expired) and did not run."""


class TimeLimitExceeded(CeleriacError):  # noqa: N818 - the Celery name users expect
    """The task ran past its hard time limit and was stopped."""


class SoftTimeLimitExceeded(CeleriacError):  # noqa: N818 - the Celery name users expect
    """Raised inside a task when its soft time limit passes, so it can clean up."""


class TaskError(CeleriacError):
    """A task failed; raised by ``AsyncResult.get(propagate=True)`` in the caller.

    Carries the remote exception's type name, its message and the worker's traceback.
    The error ``get()`` raises is often a subclass (see ``celeriac.remoteerrors``):
    also an instance of the remote type when the caller may import it.
    """

    # The module of the remote exception's type, when the worker recorded it.
    exc_module: str | None = None

    def __init__(
        self, task_id: str, exc_type: str | None, message: str, traceback: str | None = None
    ) -> None:
        self.task_id = task_id
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback
        kind = exc_type or "Error"
        # Result records already carry "Type: message"; do not repeat the type.
        text = message if message.startswith(f"{kind}:") else f"{kind}: {message}"
        super().__init__(f"task {task_id} failed: {text}")


class ResultTimeoutError(CeleriacError, TimeoutError):
    """Waiting for a result took longer than the timeout."""

    def __init__(self, task_id: str, timeout: float | None) -> None:
        self.task_id = task_id
        self.timeout = timeout
        super().__init__(f"task {task_id} did not finish within {timeout} s")


class ScheduleNotSupported(CeleriacError):  # noqa: N818 - name fixed by the contract
    """countdown/eta need JetStream message schedules (nats-server 2.12 or newer)."""


class SyncCallInEventLoopError(CeleriacError, RuntimeError):
    """A blocking SDK call was made on a thread that runs an asyncio event loop."""


class QueueNotFoundError(CeleriacError):
    """The queue's stream does not exist and this app does not declare queues."""


class PublishError(CeleriacError):
    """Submitted tasks were not confirmed as enqueued; ``task_ids`` names them.

    ``errors`` maps each id to its cause. Without an acknowledgement (a
    ``TimeoutError`` cause, e.g. during a NATS outage) the task may still have been
    stored; a refusal means it was not. Either way, sending it again with the same
    ``task_id`` is safe: JetStream drops a repeated id within the stream's duplicate
    window (2 minutes by default).
    """

    def __init__(self, message: str, errors: Mapping[str, BaseException]) -> None:
        super().__init__(message)
        self.errors = dict(errors)

    @property
    def task_ids(self) -> list[str]:
        """The ids of the tasks not confirmed as enqueued, in submission order."""
        return list(self.errors)


class BatchPublishError(PublishError):
    """Some tasks of a batch were not confirmed as enqueued; the others were."""

    @property
    def failed(self) -> dict[str, BaseException]:
        """The cause per task id (the same as ``errors``)."""
        return self.errors


class ImproperlyConfigured(CeleriacError, ValueError):  # noqa: N818 - the Celery name users expect
    """A setting (``app.conf``, ``config_from_object``, ``Celeriac(...)``) is unknown,
    not supported by Celeriac, or has a bad value; the message names it."""
