"""The application object: the task registry, and the client that reaches NATS.

``Celeriac`` holds the tasks registered with ``@app.task`` and a ``Client`` (one
connected ``Broker`` per event loop, and a background loop for blocking calls), so
submitting works from Flask or Django views, scripts and worker threads; async code
uses the ``a``-prefixed twins on its own loop.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Unpack, overload

from celeriac import async_result, periodic, schedules
from celeriac.broker import DEFAULT_CONNECT_TIMEOUT, Broker
from celeriac.canvas import Canvas, Signature
from celeriac.client import Client
from celeriac.natsauth import NatsAuth
from celeriac.planning import Plan
from celeriac.protocol import jetstream, names
from celeriac.protocol.periodic import PeriodicTask
from celeriac.protocol.signing import SigningKeys, as_keys, keys_from_env
from celeriac.submitting import prepare
from celeriac.syncbridge import refuse_inside_event_loop
from celeriac.task import Task, TaskOptions

ENV_NATS_URL = "CELERIAC_NATS_URL"
ENV_DECLARE_QUEUES = "CELERIAC_DECLARE_QUEUES"
ENV_CONNECT_TIMEOUT = "CELERIAC_CONNECT_TIMEOUT"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def declare_queues_from_env(value: str | None) -> bool:
    """``CELERIAC_DECLARE_QUEUES``: "0", "false", "no" or "off" turn declaring off."""
    if value is None or not value.strip():
        return True
    return value.strip().lower() not in {"0", "false", "no", "off"}


def connect_timeout_from(value: float | None, env: str | None) -> float:
    """The connect timeout: ``value``, else ``CELERIAC_CONNECT_TIMEOUT``, else the default.

    Raises ``ValueError`` unless it is a number of seconds above 0.
    """
    if value is None:
        if env is None or not env.strip():
            return DEFAULT_CONNECT_TIMEOUT
        try:
            seconds = float(env)
        except ValueError:
            raise ValueError(
                f"{ENV_CONNECT_TIMEOUT} must be a number of seconds, not {env!r}"
            ) from None
        where = ENV_CONNECT_TIMEOUT
    else:
        seconds, where = value, "connect_timeout"
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{where} must be a number of seconds above 0, not {seconds}")
    return seconds


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
        nats_auth: NatsAuth | None = None,
        connect_timeout: float | None = None,
        signing_keys: SigningKeys | str | Iterable[tuple[str, bytes]] | None = None,
    ) -> None:
        if result_ttl < 0:
            raise ValueError(f"result_ttl must be >= 0 seconds (0 keeps results), not {result_ttl}")
        self.name = name
        self.client = Client(
            name,
            nats_url or os.environ.get(ENV_NATS_URL) or DEFAULT_NATS_URL,
            # As the operator mounts them into pods: CELERIAC_NATS_AUTH_DIR, _CREDS.
            auth=(nats_auth or NatsAuth.from_environment(os.environ, creds_file=nats_credentials)),
            declare_queues=(
                declare_queues_from_env(os.environ.get(ENV_DECLARE_QUEUES))
                if declare_queues is None
                else declare_queues
            ),
            result_ttl=result_ttl,
            default_queue=names.check_queue_name(default_queue),
            connect_timeout=connect_timeout_from(
                connect_timeout, os.environ.get(ENV_CONNECT_TIMEOUT)
            ),
            # CELERIAC_SIGNING_KEYS or _FILE, as the operator mounts them into worker pods.
            signing_keys=(
                keys_from_env(os.environ)
                if signing_keys is None
                else as_keys(signing_keys, "signing_keys")
            ),
        )
        self.tasks: dict[str, Task] = {}
        # Periodic tasks by schedule name; ``sync_schedules`` publishes them.
        self.periodic_tasks: dict[str, PeriodicTask] = {}

    def __repr__(self) -> str:
        return f"<Celeriac {self.name} {self.nats_url}>"

    # The client's settings, readable (and the URL settable before first use) on the app.

    @property
    def nats_url(self) -> str:
        """The NATS server URL(s) this app connects to."""
        return self.client.nats_url

    @nats_url.setter
    def nats_url(self, value: str) -> None:
        self.client.nats_url = value

    @property
    def nats_credentials(self) -> str | None:
        """The NATS .creds file this app authenticates with, if any."""
        return self.client.auth.creds_file

    @property
    def nats_auth(self) -> NatsAuth:
        """The credentials and TLS files this app connects to NATS with."""
        return self.client.auth

    @property
    def connect_timeout(self) -> float:
        """Seconds the first connect to NATS may take before a call fails (later
        outages are waited out by reconnecting)."""
        return self.client.connect_timeout

    @property
    def signing_keys(self) -> SigningKeys | None:
        """The keys task messages are signed with (the first) and, on a worker, checked
        against (all); None: unsigned. Set it before the app is first used."""
        return self.client.signing_keys

    @signing_keys.setter
    def signing_keys(self, value: SigningKeys | None) -> None:
        self.client.signing_keys = value

    @property
    def default_queue(self) -> str:
        """The queue of tasks registered without ``queue=``."""
        return self.client.default_queue

    @property
    def result_ttl(self) -> float:
        """How long results are kept, in seconds (0: until deleted)."""
        return self.client.result_ttl

    @property
    def declare_queues(self) -> bool:
        """Whether a submit creates a queue's stream that does not exist yet."""
        return self.client.declare_queues

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
            task = Task(self, func, name=task_name, client=self.client, **options)
            self.tasks[task_name] = task
            return task

        if fn is not None:
            return register(fn)
        return register

    # Periodic tasks --------------------------------------------------------------------------

    def periodic_task(
        self,
        cron: str | None = None,
        every: float | timedelta | str | None = None,
        *,
        tz: str = "UTC",
        name: str | None = None,
        task_name: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None,
        concurrency_policy: str = "Allow",
        expires: float | timedelta | None = None,
        jitter: float | timedelta = 0,
        **task_options: Any,
    ) -> Callable[[Callable[..., Any]], Task]:
        """Register a function as a task (as ``@app.task``) that runs on a schedule.

        ``cron`` (5 fields, or 6 with seconds first, or a macro such as ``@daily``),
        read in the zone ``tz``, or ``every`` (seconds, a ``timedelta`` or ``"5m"``):
        exactly one. ``name`` names the schedule (default: the task name made into a
        DNS label); ``task_name`` names the task (default ``module.qualname``). ``args``
        and ``kwargs`` are passed to every run. ``concurrency_policy`` (``Allow``,
        ``Forbid``, ``Replace``) says what a slot does while the previous run is
        unfinished; ``expires`` is how long after its slot a run may still start
        (default: one interval); ``jitter`` delays each run by up to that many
        seconds. Other options go to ``@app.task``. Nothing is sent until
        ``sync_schedules()``. Mistakes raise ``ValueError`` here, naming the argument.
        """
        if queue is not None:
            names.check_queue_name(queue)

        def define(task: str, schedule: str) -> PeriodicTask:
            _check_app_schedule_name(schedule)
            return periodic.define(
                name=schedule,
                task=task,
                queue=queue or self.default_queue,
                cron_text=cron,
                every=every,
                tz=tz,
                args=args,
                kwargs=kwargs,
                policy=concurrency_policy,
                expires=expires,
                jitter=jitter,
            )

        # Checked now, before there is a function: a bad cron fails at import time.
        define(task_name or "check", name or "check")

        def register(fn: Callable[..., Any]) -> Task:
            full_name = task_name or f"{fn.__module__}.{fn.__qualname__}"
            definition = define(full_name, name or periodic.schedule_name_for(full_name))
            self._check_new_schedule(definition)
            options = {**task_options, "queue": definition.queue}
            task = self.task(name=full_name, **options)(fn)
            self.periodic_tasks[definition.name] = definition
            return task

        return register

    def add_periodic_task(
        self,
        schedule: float | timedelta | str,
        signature: Signature | Task,
        name: str | None = None,
        *,
        tz: str = "UTC",
        queue: str | None = None,
        concurrency_policy: str = "Allow",
        expires: float | timedelta | None = None,
        jitter: float | timedelta = 0,
    ) -> PeriodicTask:
        """Run ``signature`` (``add.s(2, 3)``, or a task) on ``schedule``, as Celery's
        ``add_periodic_task``: seconds or a ``timedelta`` (an interval), a cron string
        (``"0 2 * * *"``, ``"@daily"``) or ``"@every 5m"``.

        The queue is ``queue``, else the signature's, else the task's. A signature's
        ``expires`` (seconds) and ``headers`` carry over; other delivery options do not
        apply to a schedule and raise ``ValueError``. Returns the definition.
        """
        if isinstance(signature, Task):
            signature = signature.s()
        if not isinstance(signature, Signature):
            raise TypeError(
                f"signature: expected a signature (task.s(...)) or a task, not {signature!r}"
            )
        options = dict(signature.options)
        sig_queue, headers = options.pop("queue", None), options.pop("headers", None)
        sig_expires = options.pop("expires", None)
        if options:
            raise ValueError(
                f"signature: option(s) {', '.join(sorted(options))} do not apply to a periodic task"
            )
        if sig_expires is not None and not isinstance(sig_expires, int | float):
            raise ValueError("signature: expires of a periodic task must be seconds")
        if isinstance(schedule, str) and not schedule.strip().startswith("@every"):
            cron_text, every = schedule, None
        else:
            cron_text, every = None, schedule
        if name is not None:
            _check_app_schedule_name(name)
        definition = periodic.define(
            name=name or periodic.schedule_name_for(signature.task),
            task=signature.task,
            queue=queue or sig_queue or self._task_queue(signature.task),
            cron_text=cron_text,
            every=every,
            tz=tz,
            args=signature.args,
            kwargs=signature.kwargs,
            policy=concurrency_policy,
            expires=expires if expires is not None else sig_expires,
            jitter=jitter,
            headers=headers,
            arguments=("schedule", "schedule"),
        )
        self._check_new_schedule(definition)
        self.periodic_tasks[definition.name] = definition
        return definition

    def _check_new_schedule(self, definition: PeriodicTask) -> None:
        """Refuse a second, different definition under one schedule name."""
        known = self.periodic_tasks.get(definition.name)
        if known is not None and known != definition:
            raise ValueError(
                f"name: schedule {definition.name!r} is already defined (task {known.task}); "
                "give this one another name="
            )

    async def async_sync_schedules(self, prune: bool = False) -> schedules.SyncReport:
        """Publish every periodic task's schedule to NATS (unchanged ones are left alone).

        With ``prune``, also delete the schedules this app does not define on the queues
        it uses (its periodic tasks', its tasks' and its default queue).
        """
        queues = {self.default_queue, *(task.queue for task in self.tasks.values())}
        return await schedules.sync_schedules(
            await self.broker(), self.periodic_tasks.values(), prune=prune, queues=queues
        )

    def sync_schedules(self, prune: bool = False) -> schedules.SyncReport:
        """Blocking twin of ``async_sync_schedules``."""
        return self.client.run_sync(
            lambda: self.async_sync_schedules(prune=prune),
            call="sync_schedules()",
            twin="async_sync_schedules()",
        )

    def _task_queue(self, name: str) -> str:
        task = self.tasks.get(name)
        return task.queue if task is not None else self.default_queue

    def signature(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """A signature of a task known only by name (see ``send_task``)."""
        immutable = bool(options.pop("immutable", False))
        options = {"queue": self._task_queue(name), **options}
        return Signature(self.client, name, args, kwargs, options=options, immutable=immutable)

    def AsyncResult(self, task_id: str) -> async_result.AsyncResult:  # noqa: N802 - Celery's spelling
        """The result handle of ``task_id``."""
        return async_result.AsyncResult(task_id, self.client)

    def GroupResult(self, group_id: str, task_ids: Sequence[str]) -> async_result.GroupResult:  # noqa: N802
        """A group result handle over the given member ids."""
        members = [async_result.AsyncResult(t, self.client) for t in task_ids]
        return async_result.GroupResult(group_id, members, self.client)

    # Connections ---------------------------------------------------------------------------

    async def broker(self) -> Broker:
        """The connected broker for the running event loop (one per loop, made on first use)."""
        return await self.client.broker()

    async def aclose(self) -> None:
        """Close this loop's broker, and the background loop used by blocking calls."""
        await self.client.aclose()

    def close(self) -> None:
        """Close the background loop's broker and stop it (blocking calls reopen it)."""
        self.client.close()

    # Submitting ----------------------------------------------------------------------------

    def _send(
        self, name: str, args: Any, kwargs: Any, options: Mapping[str, Any], call: str
    ) -> tuple[Plan, async_result.AsyncResult]:
        item = prepare(name, args, kwargs, options, call=call, default_queue=self._task_queue(name))
        return Plan(items=[item]), async_result.AsyncResult(item.message.id, self.client)

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> async_result.AsyncResult:
        """Send a task by name (it need not be registered here); blocks until enqueued.

        Takes the options of ``Task.apply_async``.
        """
        refuse_inside_event_loop("send_task()", "asend_task()")
        plan, result = self._send(name, args, kwargs, options, "send_task")
        self.client.submit(plan)
        return result

    async def asend_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> async_result.AsyncResult:
        """Async twin of ``send_task``."""
        plan, result = self._send(name, args, kwargs, options, "asend_task")
        await self.client.asubmit(plan)
        return result

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
        self.client.submit(plan)
        return results

    async def asend_many(self, signatures: Iterable[Canvas]) -> list[Any]:
        """Async twin of ``send_many``."""
        plan, results = self._batch(signatures)
        await self.client.asubmit(plan)
        return results


def _check_app_schedule_name(name: str) -> None:
    """Refuse a '.' in an app's schedule name: TaskSchedule resources' schedules are
    ``<namespace>.<name>``, and an app's sync must never take one of those over."""
    if isinstance(name, str) and "." in name:
        raise ValueError(
            f"name: {name!r} has a '.', reserved for the schedules of TaskSchedule "
            "resources (<namespace>.<name>); use '-'"
        )
