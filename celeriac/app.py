"""The application object: task registry, configuration and the way to NATS.

``Celeriac`` holds the tasks registered with ``@app.task`` and hands out one
connected ``Broker`` per event loop. Blocking calls run on the app's own
background loop (``SyncBridge``), so they work from Flask or Django views, scripts
and worker threads; async code uses the ``a``-prefixed twins on its own loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar, Unpack, overload

from celeriac import async_result
from celeriac.broker import Broker, Delayed
from celeriac.canvas import Canvas, Signature
from celeriac.planning import Plan, execute
from celeriac.protocol import jetstream, names
from celeriac.submitting import Submission, build_message
from celeriac.syncbridge import SyncBridge, refuse_inside_event_loop
from celeriac.task import Task, TaskOptions

T = TypeVar("T")

ENV_NATS_URL = "CELERIAC_NATS_URL"
ENV_NATS_CREDS = "CELERIAC_NATS_CREDS"
ENV_DECLARE_QUEUES = "CELERIAC_DECLARE_QUEUES"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def declare_queues_from_env(value: str | None) -> bool:
    """``CELERIAC_DECLARE_QUEUES``: "0", "false", "no" or "off" turn declaring off."""
    if value is None or not value.strip():
        return True
    return value.strip().lower() not in {"0", "false", "no", "off"}


class Celeriac:
    """A Celeriac application: register tasks on it and submit them through it."""

    def __init__(
        self,
        name: str,
        nats_url: str | None = None,
        *,
        default_queue: str = names.DEFAULT_QUEUE,
        result_ttl: float = jetstream.RESULT_TTL_SECONDS,
        declare_queues: bool | None = None,
        nats_credentials: str | None = None,
    ) -> None:
        self.name = name
        self.nats_url = nats_url or os.environ.get(ENV_NATS_URL) or DEFAULT_NATS_URL
        # A NATS .creds file (JWT + nkey seed), as mounted by the operator into worker pods.
        self.nats_credentials = nats_credentials or os.environ.get(ENV_NATS_CREDS) or None
        self.default_queue = names.check_queue_name(default_queue)
        if result_ttl < 0:
            raise ValueError(f"result_ttl must be >= 0 seconds (0 keeps results), not {result_ttl}")
        self.result_ttl = result_ttl
        self.declare_queues = (
            declare_queues_from_env(os.environ.get(ENV_DECLARE_QUEUES))
            if declare_queues is None
            else declare_queues
        )
        self.tasks: dict[str, Task] = {}
        self._brokers: dict[asyncio.AbstractEventLoop, asyncio.Future[Broker]] = {}
        self._lock = threading.Lock()
        self._bridge = SyncBridge(name)

    def __repr__(self) -> str:
        return f"<Celeriac {self.name} {self.nats_url}>"

    # Tasks ---------------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[..., Any], /) -> Task: ...

    @overload
    def task(
        self, /, *, name: str | None = None, **options: Unpack[TaskOptions]
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        **options: Unpack[TaskOptions],
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Register a function (``def`` or ``async def``) as a task: ``@app.task`` or
        ``@app.task(name=..., queue=..., max_retries=..., bind=True, ...)``.

        The default name is ``module.qualname``. Options and defaults: ``queue`` (the
        app's), ``max_retries=3``, ``retry_backoff=1.0``, ``retry_backoff_max=600.0``,
        ``retry_jitter=True``, ``time_limit=None``, ``soft_time_limit=None``,
        ``bind=False``, ``ignore_result=False``.
        """
        queue = options.get("queue")
        if queue is not None:
            names.check_queue_name(queue)

        def register(func: Callable[..., Any]) -> Task:
            task_name = name or f"{func.__module__}.{func.__qualname__}"
            task = Task(self, func, name=task_name, **options)
            self.tasks[task_name] = task
            return task

        if fn is not None:
            return register(fn)
        return register

    def signature(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """A signature of a task known only by name (see ``send_task``)."""
        immutable = bool(options.pop("immutable", False))
        return Signature(self, name, args, kwargs, options=options, immutable=immutable)

    def AsyncResult(self, task_id: str) -> async_result.AsyncResult:  # noqa: N802 - Celery's spelling
        """The result handle of ``task_id``."""
        return async_result.AsyncResult(task_id, self)

    def GroupResult(self, group_id: str, task_ids: Sequence[str]) -> async_result.GroupResult:  # noqa: N802
        """A group result handle over the given member ids."""
        members = [async_result.AsyncResult(t, self) for t in task_ids]
        return async_result.GroupResult(group_id, members, self)

    # Connections ---------------------------------------------------------------------------

    async def broker(self) -> Broker:
        """The connected broker for the running event loop (one per loop, made on first use)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for old in [lp for lp in self._brokers if lp.is_closed()]:
                del self._brokers[old]  # a finished loop's connection died with it
            future = self._brokers.get(loop)
            if future is None:
                future = loop.create_task(
                    Broker.connect(
                        self.nats_url,
                        declare=self.declare_queues,
                        result_ttl=self.result_ttl,
                        credentials=self.nats_credentials,
                    )
                )
                self._brokers[loop] = future
        try:
            return await asyncio.shield(future)
        except Exception:
            with self._lock:
                if self._brokers.get(loop) is future:
                    del self._brokers[loop]
            raise

    async def aclose(self) -> None:
        """Close this loop's broker, and the background loop used by blocking calls."""
        loop = asyncio.get_running_loop()
        with self._lock:
            future = self._brokers.pop(loop, None)
        if future is not None and future.done() and not future.exception():
            await future.result().close()
        await asyncio.to_thread(self._close_bridge)

    def close(self) -> None:
        """Close the background loop's broker and stop it (blocking calls reopen it)."""
        self._close_bridge()

    def _close_bridge(self) -> None:
        bridge_loop = self._bridge.loop
        if bridge_loop is None:
            return

        async def shutdown() -> None:
            with self._lock:
                future = self._brokers.pop(bridge_loop, None)
            if future is not None:
                broker = await future
                await broker.close()

        self._bridge.close(shutdown)

    def run_sync(
        self,
        factory: Callable[[], Coroutine[Any, Any, T]],
        *,
        call: str,
        twin: str,
        timeout: float | None = None,
    ) -> T:
        """Run a coroutine on the app's background loop from blocking code."""
        return self._bridge.run(factory, call=call, twin=twin, timeout=timeout)

    # Submitting ----------------------------------------------------------------------------

    def _single(self, name: str, args: Any, kwargs: Any, options: dict[str, Any]) -> Delayed:
        countdown = options.pop("countdown", None)
        eta = options.pop("eta", None)
        queue = options.pop("queue", None) or self._task_queue(name)
        sub = Submission(task=name, queue=queue, args=args or (), kwargs=kwargs or {}, **options)
        return Delayed(build_message(sub), countdown, eta)

    def _task_queue(self, name: str) -> str:
        task = self.tasks.get(name)
        return task.queue if task is not None else self.default_queue

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> async_result.AsyncResult:
        """Send a task by name (it need not be registered here); blocks until enqueued.

        Options: ``countdown``, ``eta``, ``expires`` (datetime or seconds), ``task_id``,
        ``queue``, ``headers``, ``ignore_result``.
        """
        refuse_inside_event_loop("send_task()", "asend_task()")
        item = self._single(name, args, kwargs, dict(options))
        self.execute_plan(Plan(items=[item]))
        return async_result.AsyncResult(item.message.id, self)

    async def asend_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> async_result.AsyncResult:
        """Async twin of ``send_task``."""
        item = self._single(name, args, kwargs, dict(options))
        await self.aexecute_plan(Plan(items=[item]))
        return async_result.AsyncResult(item.message.id, self)

    def _batch(self, signatures: Iterable[Canvas]) -> tuple[Plan, list[Any]]:
        plan, results = Plan(), []
        for sig in signatures:
            if not isinstance(sig, Canvas):
                raise TypeError(f"send_many takes signatures (task.s(...)), not {sig!r}")
            part, result = sig.plan()
            plan.extend(part)
            results.append(result)
        return plan, results

    def send_many(self, signatures: Iterable[Canvas]) -> list[Any]:
        """Send many signatures at once, pipelining the publishes; one result each, in order."""
        refuse_inside_event_loop("send_many()", "asend_many()")
        plan, results = self._batch(signatures)
        self.execute_plan(plan)
        return results

    async def asend_many(self, signatures: Iterable[Canvas]) -> list[Any]:
        """Async twin of ``send_many``."""
        plan, results = self._batch(signatures)
        await self.aexecute_plan(plan)
        return results

    def execute_plan(self, plan: Plan) -> None:
        """Publish a plan from blocking code."""
        self.run_sync(
            lambda: self.aexecute_plan(plan), call="submitting a task", twin="the a* twin"
        )

    async def aexecute_plan(self, plan: Plan) -> None:
        """Publish a plan on the running loop."""
        await execute(await self.broker(), plan)
