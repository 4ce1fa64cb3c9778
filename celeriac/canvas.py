"""Canvas: signatures, chains, groups and chords, and how they are submitted.

A ``Signature`` is a task call not sent yet (``add.s(2, 3)``). A ``chain`` sends its
first step with the rest attached to the message; a worker publishes each next step
when the previous succeeds (``celeriac.worker_runtime.continuation``). A ``group`` sends all members
at once, pipelined; a ``chord`` is a group whose members carry the callback, which
is published exactly once when the last member succeeds. Every step's task id is
fixed at submit time, so the caller gets result handles for work not published yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from celeriac.async_result import AsyncResult, GroupResult
from celeriac.client import Client
from celeriac.planning import Plan
from celeriac.protocol.envelope import ChordRef
from celeriac.protocol.envelope import Signature as WireSignature
from celeriac.publishing import rfc3339
from celeriac.submitting import (
    NO_LINKS,
    OPTIONS,
    Delayed,
    Links,
    absolute_time,
    check_options,
    check_task_id,
    new_task_id,
    prepare,
)
from celeriac.syncbridge import refuse_inside_event_loop

__all__ = ["Canvas", "Signature", "chain", "chord", "group"]

# Options a chain step or chord callback carries in its message; a step's eta cannot
# be fixed at submit time (the step is published when its parent finishes).
_CARRIED = tuple(sorted(OPTIONS - {"eta", "expires"}))


class Canvas:
    """What every canvas object shares: building a plan and submitting it."""

    client: Client

    def plan(self, args: Sequence[Any] = ()) -> tuple[Plan, Any]:
        """The messages sending this publishes, and the result handle the caller gets."""
        raise NotImplementedError

    def configured(
        self, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any], call: str
    ) -> Canvas:
        """A copy with extra keyword arguments and options (checked, in ``call``'s name)."""
        raise NotImplementedError

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Send it (``args`` go before the stored ones); blocks until the server has it."""
        refuse_inside_event_loop(f"{self!r}.apply_async()", "aapply_async()")
        plan, result = self.configured(kwargs, options, "apply_async").plan(tuple(args or ()))
        self.client.submit(plan)
        return result

    async def aapply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Async twin of ``apply_async``."""
        plan, result = self.configured(kwargs, options, "aapply_async").plan(tuple(args or ()))
        await self.client.asubmit(plan)
        return result

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Send it with extra arguments."""
        return self.apply_async(args, kwargs)

    async def adelay(self, *args: Any, **kwargs: Any) -> Any:
        """Async twin of ``delay``."""
        return await self.aapply_async(args, kwargs)

    def __or__(self, other: Canvas) -> Canvas:
        return chain(self, other)


class Signature(Canvas):
    """A task name with arguments and delivery options, ready to send or to compose."""

    def __init__(
        self,
        client: Client,
        task: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        options: Mapping[str, Any] | None = None,
        immutable: bool = False,
    ) -> None:
        self.client = client
        self.task = task
        self.args = list(args or ())
        self.kwargs = dict(kwargs or {})
        self.options: dict[str, Any] = {}
        self.immutable = immutable
        self._merge(options or {}, "signature")

    def __repr__(self) -> str:
        return f"{self.task}.{'si' if self.immutable else 's'}(*{self.args!r}, **{self.kwargs!r})"

    def _merge(self, options: Mapping[str, Any], call: str) -> None:
        # Checked together with what is already set: countdown here and eta there clash.
        self.options = check_options({**self.options, **options}, call)

    def set(self, **options: Any) -> Signature:
        """Set delivery options; the same ones ``apply_async`` accepts."""
        self._merge(options, "set")
        return self

    def clone(self) -> Signature:
        """An independent copy."""
        return Signature(
            self.client,
            self.task,
            self.args,
            self.kwargs,
            options=self.options,
            immutable=self.immutable,
        )

    def configured(
        self, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any], call: str
    ) -> Signature:
        copy = self.clone()
        copy._merge(options, call)
        copy.kwargs.update(kwargs or {})
        return copy

    def freeze(self) -> str:
        """Fix this signature's task id (a new one unless given) and return it."""
        if "task_id" not in self.options:
            self.options["task_id"] = new_task_id()
        return str(self.options["task_id"])

    def delayed(self, args: Sequence[Any] = (), links: Links = NO_LINKS) -> Delayed:
        """This signature as one message to publish (``args`` go first)."""
        return prepare(
            self.task,
            [*args, *self.args],
            self.kwargs,
            self.options,
            call="signature",
            default_queue=self.client.default_queue,
            links=links,
        )

    def to_wire(self) -> WireSignature:
        """The JSON form carried inside messages (chain steps, chord callbacks)."""
        if self.options.get("eta") is not None:
            raise ValueError(
                f"{self!r}: eta is not supported inside a chain or chord; use countdown"
            )
        self.delayed()  # reject bad arguments before anything is sent
        opts: dict[str, Any] = {k: self.options[k] for k in _CARRIED if k in self.options}
        expires = absolute_time(self.options.get("expires"), "expires")
        if expires is not None:
            opts["expires"] = rfc3339(expires)
        opts.setdefault("queue", self.client.default_queue)
        return WireSignature(
            task=self.task,
            args=self.args,
            kwargs=self.kwargs,
            options=opts,
            immutable=self.immutable,
        )

    def plan(self, args: Sequence[Any] = ()) -> tuple[Plan, AsyncResult]:
        item = self.delayed(args)
        return Plan(items=[item]), AsyncResult(item.message.id, self.client)


def _unpack(given: tuple[Any, ...]) -> list[Any]:
    """``f(a, b)`` and ``f([a, b])`` (or any iterable) mean the same."""
    if len(given) == 1 and not isinstance(given[0], Canvas) and isinstance(given[0], Iterable):
        return list(given[0])
    return list(given)


def _signatures(kind: str, items: Sequence[Any]) -> list[Signature]:
    flat: list[Signature] = []
    for item in items:
        if isinstance(item, chain) and kind == "chain":
            flat.extend(item.steps)
        elif isinstance(item, Signature):
            flat.append(item.clone())
        else:
            raise TypeError(
                f"a {kind} takes task signatures (task.s(...)); {item!r} is not supported here"
            )
    return flat


class chain(Canvas):  # noqa: N801 - Celery's spelling
    """Steps run one after another, each receiving the previous result first."""

    def __init__(self, *steps: Canvas | Iterable[Canvas]) -> None:
        items = _unpack(steps)
        if not items:
            raise ValueError("a chain needs at least one step")
        self.steps = _signatures("chain", items)
        self.client = self.steps[0].client

    def __repr__(self) -> str:
        return " | ".join(repr(s) for s in self.steps)

    def configured(
        self, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any], call: str
    ) -> chain:
        first = self.steps[0].configured(kwargs, options, call)
        return chain(first, *self.steps[1:])

    def plan(self, args: Sequence[Any] = ()) -> tuple[Plan, AsyncResult]:
        ids = [step.freeze() for step in self.steps]
        rest = [step.to_wire() for step in self.steps[1:]]
        item = self.steps[0].delayed(args, Links(chain=rest))
        parent: AsyncResult | None = None
        for task_id in ids:
            parent = AsyncResult(task_id, self.client, parent=parent)
        assert parent is not None
        return Plan(items=[item]), parent


class group(Canvas):  # noqa: N801 - Celery's spelling
    """Members run in parallel; the result lists their results in order."""

    def __init__(
        self, *members: Signature | Iterable[Signature], group_id: str | None = None
    ) -> None:
        items = _unpack(members)
        self.members = _signatures("group", items)
        self.group_id = check_task_id(group_id) if group_id else None
        if not self.members:
            raise ValueError("a group needs at least one member")
        self.client = self.members[0].client

    def __repr__(self) -> str:
        return f"group({self.members!r})"

    def configured(
        self, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any], call: str
    ) -> group:
        opts = dict(options)
        group_id = opts.pop("task_id", None) or self.group_id
        members = [m.configured(kwargs, opts, call) for m in self.members]
        return group(members, group_id=group_id)

    def __or__(self, other: Canvas) -> Canvas:
        if isinstance(other, Signature):
            return chord(self, other)
        return super().__or__(other)

    def plan_members(
        self, args: Sequence[Any], chord_ref: ChordRef | None
    ) -> tuple[Plan, GroupResult]:
        """The plan for the members (carrying ``chord_ref`` when in a chord header)."""
        group_id = self.group_id or new_task_id()
        items = [
            member.delayed(args, Links(group_id=group_id, group_index=index, chord=chord_ref))
            for index, member in enumerate(self.members)
        ]
        children = [item.message.id for item in items]
        results = [AsyncResult(c, self.client) for c in children]
        result = GroupResult(group_id, results, self.client)
        return Plan(items=items, groups={group_id: children}), result

    def plan(self, args: Sequence[Any] = ()) -> tuple[Plan, GroupResult]:
        return self.plan_members(args, None)


class chord(Canvas):  # noqa: N801 - Celery's spelling
    """A group whose results, in order, are passed to ``body`` once every member succeeded.

    If a member fails for good (after its retries), the body never runs and the chord's
    result (the body's id) becomes FAILURE naming that member.
    """

    def __init__(self, header: group | Sequence[Signature], body: Signature) -> None:
        self.header = header if isinstance(header, group) else group(list(header))
        if not isinstance(body, Signature):
            raise TypeError(f"a chord body must be a task signature, not {body!r}")
        self.body = body.clone()
        self.client = body.client

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"

    def configured(
        self, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any], call: str
    ) -> chord:
        return chord(self.header.configured(kwargs, options, call), self.body)

    def plan(self, args: Sequence[Any] = ()) -> tuple[Plan, AsyncResult]:
        callback_id = self.body.freeze()
        ref = ChordRef(id=callback_id, size=len(self.header.members), callback=self.body.to_wire())
        plan, members = self.header.plan_members(args, ref)
        return plan, AsyncResult(callback_id, self.client, parent=members)
