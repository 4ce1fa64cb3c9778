"""A registered task: the function, its options, and the ways to submit it.

``@app.task`` wraps a ``def`` or ``async def`` in a ``Task``. Calling the task runs
the function here (as Celery does); ``delay``/``apply_async`` (and their async twins)
send it to a worker. Bound tasks receive a ``BoundContext`` first, which carries the
current ``Request`` and ``retry()``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, NoReturn, TypedDict, Unpack

from celeriac import runoptions
from celeriac.async_result import AsyncResult
from celeriac.canvas import Signature
from celeriac.client import Client
from celeriac.exceptions import ExceptionInfo, ImproperlyConfigured, MaxRetriesExceededError, Retry
from celeriac.planning import Plan
from celeriac.protocol import names
from celeriac.protocol.envelope import TaskMessage
from celeriac.protocol.webhooks import webhook_target
from celeriac.submitting import prepare
from celeriac.syncbridge import refuse_inside_event_loop


class TaskOptions(TypedDict, total=False):
    """Options of ``@app.task`` besides ``name``; the defaults are in :class:`Task`."""

    queue: str | None
    # Retries and time limits (celeriac.runoptions; docs/sdk.md, "Retries").
    autoretry_for: Sequence[type[BaseException]]
    dont_autoretry_for: Sequence[type[BaseException]]
    retry_kwargs: Mapping[str, Any]
    max_retries: int | None
    default_retry_delay: float
    retry_backoff: bool | float
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
    # The message's own max_retries (apply_async(max_retries=...)); None: the task's.
    max_retries: int | None = None

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
            max_retries=message.max_retries,
        )


class BoundContext:
    """The ``self`` of a bound task: the request, ``retry()``, and the task's attributes."""

    def __init__(self, task: Task, request: Request) -> None:
        self.task = task
        self.request = request
        self.app = task.app

    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        *,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> NoReturn:
        """Ask the worker to run this task again, with the same arguments, after
        ``countdown`` seconds (or at ``eta``; default: the task's ``default_retry_delay``).

        With no retries left (``max_retries``: this call's, else the message's, else
        the task's) it raises ``exc`` when given, else ``MaxRetriesExceededError``.
        ``args``, ``kwargs``, ``throw=False`` and other Celery options are refused:
        a retry is a redelivery of the same message.
        """
        refused = sorted(options) + [
            name for name, given in (("args", args), ("kwargs", kwargs)) if given is not None
        ]
        if not throw:
            refused.append("throw=False")
        if refused:
            raise TypeError(
                f"retry() does not support {', '.join(refused)}: a retry runs the same "
                "message again; submit a new task to change its arguments"
            )
        if eta is not None:
            moment = eta if eta.tzinfo is not None else eta.replace(tzinfo=UTC)
            countdown = max(0.0, (moment - datetime.now(UTC)).total_seconds())
        limit = runoptions.retries_allowed(
            runoptions.max_retries("max_retries", max_retries),
            self.request.max_retries,
            self.task.max_retries,
        )
        if self.request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"cannot retry {self.task.name}[{self.request.id}]: it has had its "
                f"{self.request.retries} retries (max_retries={limit})"
            )
        raise Retry(countdown=countdown, exc=exc, max_retries=max_retries)

    def __getattr__(self, name: str) -> Any:
        # Celery code reads self.name, self.max_retries, calls self.delay(...): forward them.
        return getattr(self.task, name)


class Task:
    """A function registered with an app under a name, plus its execution options.

    ``app`` is the application that registered it (``self.app`` in bound tasks); the
    task itself submits through the app's ``client`` only. A subclass (``base=``) may
    set the run options below as class attributes and override the hooks.
    """

    # Run options and their defaults (Celery's). A value comes from the decorator,
    # else a subclass attribute, else app.conf "task_<option>", else here.
    #: Exceptions that retry the task by themselves (time limits only when named).
    autoretry_for: tuple[type[BaseException], ...] = ()
    #: Exceptions that never retry by themselves, even when ``autoretry_for`` matches.
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    #: ``countdown`` and ``max_retries`` of automatic retries.
    retry_kwargs: Mapping[str, Any] = MappingProxyType({})
    #: Retries allowed (automatic and ``self.retry()``); None: up to 10,000.
    max_retries: int | None = 3
    #: Seconds before a retry that names no countdown and has no backoff.
    default_retry_delay: float = 180.0
    #: Exponential backoff of automatic retries: False, True (1 s) or base seconds.
    retry_backoff: bool | float = False
    #: The longest backoff delay, in seconds.
    retry_backoff_max: float = 600.0
    #: Draw each backoff delay at random between 0 and the exponential ("full jitter").
    retry_jitter: bool = True
    #: Seconds after which the worker stops the task (None: never).
    time_limit: float | None = None
    #: Seconds after which ``SoftTimeLimitExceeded`` is raised inside the task.
    soft_time_limit: float | None = None

    #: The error ``self.retry()`` raises with no retries left (as ``Task.MaxRetriesExceededError``
    #: in Celery).
    MaxRetriesExceededError = MaxRetriesExceededError

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
        for option, value in runoptions.resolve(type(self), Task, app, options).items():
            setattr(self, option, value)
        # The options neither given nor set on the class: they follow app.conf changes.
        self._conf_options = runoptions.follows_conf(type(self), Task, options)
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

    def _follow_conf(self, conf: Mapping[str, Any]) -> None:
        """Take the run options this task has from ``app.conf`` anew from ``conf``
        (the app's settings as they are about to be); the app calls it when a
        ``task_*`` default changes. Options given to the decorator or set on the
        class are left alone."""
        values = {
            option: runoptions.configured(option, Task, conf)
            for option in getattr(self, "_conf_options", ())
        }
        for option, value in values.items():
            setattr(self, option, value)

    # Hooks: a subclass (base=) overrides them; the worker calls them (docs/worker.md) ----

    def before_start(self, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Called by the worker just before the task runs."""

    def on_success(
        self, retval: Any, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        """Called by the worker when the task has succeeded (``retval`` is its value)."""

    def on_retry(
        self,
        exc: BaseException,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        """Called by the worker when the task is to run again (``exc`` caused the retry)."""

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        """Called by the worker when the task has failed for good."""

    def after_return(  # noqa: PLR0917 - Celery's signature, called positionally
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        einfo: ExceptionInfo | None,
    ) -> None:
        """Called by the worker after the other hooks: ``status`` is ``SUCCESS``, ``RETRY``
        or ``FAILURE``; ``retval`` the value, or the exception when it failed."""

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

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 - Celery's spelling
        """The result handle of ``task_id``, read through this task's app."""
        return AsyncResult(task_id, self.client)

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
        return Signature(
            self.client,
            self.name,
            args,
            kwargs,
            options=options,
            immutable=immutable,
            task_type=self,
        )


def task_class(value: Any, where: str) -> type[Task]:
    """``value`` as a ``Task`` subclass: a class, or ``"module:Class"`` to import."""
    if isinstance(value, str):
        module, _, attribute = value.partition(":")
        if not attribute:
            module, _, attribute = value.rpartition(".")
        try:
            value = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ImproperlyConfigured(f"{where}: cannot import {value!r}: {exc}") from None
    if not (isinstance(value, type) and issubclass(value, Task)):
        raise TypeError(f"{where} must be a subclass of celeriac.Task, not {value!r}")
    return value


def check_options(options: Mapping[str, Any], base: Any = None) -> type[Task] | None:
    """Refuse now what registering a task with ``options`` and ``base`` would refuse,
    naming the option: an unknown option, a bad queue name or webhook, a bad run
    option value (a ``base`` class's attributes too), a ``base`` that is not a
    ``Task`` subclass. Returns ``base`` as a class (imported when given as
    ``"module:Class"``), or None. ``@app.task`` and ``@shared_task`` both use it."""
    unknown = sorted(set(options) - TaskOptions.__optional_keys__)
    if unknown:
        raise TypeError(f"unknown task option(s): {', '.join(unknown)}")
    queue = options.get("queue")
    if queue is not None:
        names.check_queue_name(queue)
    cls = None if base is None else task_class(base, "base")
    runoptions.resolve(cls or Task, Task, None, options)
    webhook = options.get("webhook")
    if webhook is not None:
        webhook_target(webhook)
    return cls
