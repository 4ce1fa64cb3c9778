"""``DjangoTask``: tasks that can wait for the database transaction to commit.

A view that saves a row and submits a task about it in one transaction must not let
a worker look for the row before it is committed, nor run the task at all when the
transaction rolls back. ``delay_on_commit`` hands the submit to Django's
``transaction.on_commit``.

A worker's threads live long, unlike a web request, so a sync task also closes its
thread's stale database connections (broken, or older than ``CONN_MAX_AGE``) before
and after it runs, as Django does around each request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial, wraps
from typing import Any

from django.db import connections, transaction

from celeriac.async_result import AsyncResult
from celeriac.protocol.arguments import check_arguments
from celeriac.submitting import new_task_id
from celeriac.task import Task


class DjangoTask(Task):
    """A task with ``delay_on_commit`` and ``apply_async_on_commit``.

    ``celeriac.contrib.django.setup(app)`` makes it the app's task class, so every
    ``@app.task`` has them.
    """

    def __init__(self, app: Any, fn: Callable[..., Any], **options: Any) -> None:
        super().__init__(app, fn, **options)
        if not self.is_async:
            self.fn = _closing_stale_connections(fn)

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """``delay`` once the current transaction of the default database commits.

        Outside a transaction (autocommit) the task is sent at once.
        """
        return self.apply_async_on_commit(args, kwargs)

    def apply_async_on_commit(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        using: str | None = None,
        **options: Any,
    ) -> AsyncResult:
        """``apply_async`` once the current transaction of database ``using`` commits.

        Arguments and options are checked now, so a mistake raises here, inside the
        transaction, instead of after the commit. The result handle is returned at
        once; if the transaction rolls back nothing is sent and it stays PENDING.
        Outside a transaction (autocommit) the task is sent at once.
        """
        check_arguments(self.name, args or (), kwargs or {})
        task_id = options.get("task_id") or new_task_id()
        options = {**options, "task_id": task_id}
        self.signature(args, kwargs, **options)  # checks the options as apply_async will
        transaction.on_commit(partial(self.apply_async, args, kwargs, **options), using=using)
        return AsyncResult(task_id, self.client)


def _closing_stale_connections(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, closing this thread's stale database connections before and after."""

    @wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        close_stale_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_stale_connections()

    return run


def close_stale_connections() -> None:
    """Close this thread's connections that are broken or older than ``CONN_MAX_AGE``.

    A connection inside a transaction is left alone: a task called directly in a
    view's ``atomic()`` block, or run eagerly in a test case, must not lose it.
    """
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
