"""A registered task: the function, its options, and the ways to submit it.

``@app.task`` wraps a ``def`` or ``async def`` in a ``Task``. Calling the task runs
the function here (as Celery does); ``delay``/``apply_async`` (and their async twins)
send it to a worker. Bound tasks receive a ``BoundContext`` first, which carries the
current ``Request`` and ``retry()``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn, TypedDict, Unpack

from celeriac.async_result import AsyncResult
from celeriac.canvas import Signature
from celeriac.client import Client
from celeriac.exceptions import Retry
from celeriac.planning import Plan
from celeriac.protocol.envelope import TaskMessage
from celeriac.protocol.webhooks import webhook_target
from celeriac.submitting import prepare
from celeriac.syncbridge import refuse_inside_event_loop


class TaskOptions(TypedDict, total=False):
    """Options of ``@app.task`` besides ``name``; the defaults are in :class:`Task`."""

    queue: str | None
    max_retries: int
    retry_backoff: float
    retry_backoff_max: float
    retry_jitter: bool
    time_limit: float | None
    soft_time_limit: float | None
    bind: bool
    ignore_result: bool
    # Completion webhook: a URL or {url, events, secret} (protocol.webhooks).
    webhook: str | Mapping[str, Any] | None


@dataclass
class Request:
    """What a running task knows about its own delivery (``self.request`` in bound tasks)."""

    id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    queue: str = ""
    parent_id: str | None = None
    root_id: str | None = None
    group_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    eta: datetime | None = None
    expires: datetime | None = None
    delivery_info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_message(
        cls, message: TaskMessage, *, retries: int, delivery_info: dict[str, Any] | None = None
    ) -> Request:
        """The request for one delivery of ``message`` (``retries`` counts earlier attempts)."""
        return cls(
            id=message.id,
            task=message.task,
            args=list(message.args),
            kwargs=dict(message.kwargs),
            retries=retries,
            queue=message.queue,
            parent_id=message.parent_id,
            root_id=message.root_id,
            group_id=message.group_id,
            headers=dict(message.headers),
            eta=message.eta,
            expires=message.expires,
            delivery_info=dict(delivery_info or {}),
        )


class BoundContext:
    """The ``self`` of a bound task: the request, ``retry()``, and the task's attributes."""

    def __init__(self, task: Task, request: Request) -> None:
        self.task = task
        self.request = request
        self.app = task.app

    def retry(
        self,
        countdown: float | None = None,
        exc: BaseException | None = None,
        max_retries: int | None = None,
    ) -> NoReturn:
        """Ask the worker to run this task again after ``countdown`` (default: backoff)."""
        raise Retry(countdown=countdown, exc=exc, max_retries=max_retries)

    def __getattr__(self, name: str) -> Any:
        # Celery code reads self.name, self.max_retries, calls self.delay(...): forward them.
        return getattr(self.task, name)


class Task:
    """A function registered with an app under a name, plus its execution options.

    ``app`` is the application that registered it (``self.app`` in bound tasks); the
    task itself submits through the app's ``client`` only.
    """

    def __init__(
        self,
        app: Any,
        fn: Callable[..., Any],
        *,
        name: str,
        client: Client,
        **options: Unpack[TaskOptions],
    ) -> None:
        unknown = sorted(set(options) - TaskOptions.__optional_keys__)
        if unknown:
            raise TypeError(f"unknown task option(s): {', '.join(unknown)}")
        self.app = app
        self.client = client
        self.fn = fn
        self.name = name
        self.queue = options.get("queue") or client.default_queue
        self.max_retries = options.get("max_retries", 3)
        self.retry_backoff = options.get("retry_backoff", 1.0)
        self.retry_backoff_max = options.get("retry_backoff_max", 600.0)
        self.retry_jitter = options.get("retry_jitter", True)
        self.time_limit = options.get("time_limit")
        self.soft_time_limit = options.get("soft_time_limit")
        self.bind = options.get("bind", False)
        self.ignore_result = options.get("ignore_result", False)
        self.webhook = options.get("webhook")
        if self.webhook is not None:
            webhook_target(self.webhook)  # a mistake shows at import time, naming the option
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function here, now (a bound task gets a local request)."""
        if self.bind:
            ctx = self.bound_context(Request(id="local", task=self.name, queue=self.queue))
            return self.fn(ctx, *args, **kwargs)
        return self.fn(*args, **kwargs)

    def bound_context(self, request: Request) -> BoundContext:
        """The first argument a bound task's function receives while serving ``request``."""
        return BoundContext(self, request)

    # Submitting ---------------------------------------------------------------------------

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the task with these arguments; blocks until the server has it."""
        refuse_inside_event_loop(f"{self.name}.delay()", f"{self.name}.adelay()")
        return self.apply_async(args, kwargs)

    async def adelay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Async twin of ``delay``."""
        return await self.aapply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send the task with delivery options.

        Options: ``countdown`` (seconds), ``eta`` (datetime), ``expires`` (datetime or
        seconds), ``task_id``, ``queue``, ``headers`` (str -> str), ``ignore_result``,
        ``max_retries``, ``time_limit``, ``soft_time_limit``, ``webhook`` (a URL or
        {url, events, secret}: POSTed when the task settles, docs/webhooks.md).
        """
        refuse_inside_event_loop(f"{self.name}.apply_async()", f"{self.name}.aapply_async()")
        plan, result = self._plan(args, kwargs, options, "apply_async")
        self.client.submit(plan)
        return result

    async def aapply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Async twin of ``apply_async``."""
        plan, result = self._plan(args, kwargs, options, "aapply_async")
        await self.client.asubmit(plan)
        return result

    def _plan(
        self,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any],
        call: str,
    ) -> tuple[Plan, AsyncResult]:
        item = prepare(
            self.name, args, kwargs, self._options(options), call=call, default_queue=self.queue
        )
        return Plan(items=[item]), AsyncResult(item.message.id, self.client)

    def _options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        # The task's own ignore_result and webhook unless the call says otherwise
        # (webhook=None turns it off); False is the envelope's default and needs no entry.
        merged = dict(options)
        if self.ignore_result and "ignore_result" not in options:
            merged["ignore_result"] = True
        if self.webhook is not None and "webhook" not in options:
            merged["webhook"] = self.webhook
        return merged

    # Canvas -------------------------------------------------------------------------------

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this task that receives its parent's result in a chain."""
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: it ignores its parent's result."""
        return self.signature(args, kwargs, immutable=True)

    def signature(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        immutable: bool = False,
        **options: Any,
    ) -> Signature:
        """A signature with explicit args, kwargs and delivery options."""
        options = {"queue": self.queue, **self._options(options)}
        return Signature(self.client, self.name, args, kwargs, options=options, immutable=immutable)
