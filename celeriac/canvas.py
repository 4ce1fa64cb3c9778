"""Canvas: signatures, chains, groups and chords, how they nest, and how they are sent.

A ``Signature`` is a task call not sent yet (``add.s(2, 3)``). A ``chain`` sends what
starts it with the rest attached to the message; a worker sends each next step when
the previous one succeeds (``celeriac.worker_runtime.continuation``). A ``group``
sends its members at once, pipelined; a group followed by a step is a chord: the step
(the callback) is sent exactly once, with the members' results, when the last member
succeeded. They nest: a chain may hold groups and chords, a group may hold chains and
chords, a chord's body may be a chain; a group inside a group is flattened.

Every task id (and group id) is fixed at submit time, so the caller gets result
handles for work not sent yet.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from celeriac.async_result import AsyncResult, GroupResult
from celeriac.client import Client
from celeriac.planning import Plan
from celeriac.protocol.envelope import ChordRef, GroupStep
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
    wire_links,
)
from celeriac.syncbridge import refuse_inside_event_loop

__all__ = ["Canvas", "Signature", "chain", "chord", "group"]

# Options a chain step or chord callback carries in its message; a step's eta cannot
# be fixed at submit time (the step is published when its parent finishes). Links
# travel as fields of their own.
_CARRIED = tuple(sorted(OPTIONS - {"eta", "expires", "link", "link_error"}))
_LINKS = ("link", "link_error")

Step = WireSignature | GroupStep


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


class Canvas:
    """What every canvas object shares: building a plan, submitting it, links."""

    client: Client

    # What each kind provides -----------------------------------------------------------

    def copy(self) -> Canvas:
        """An independent deep copy (sending a canvas never changes the one given)."""
        raise NotImplementedError

    def configured(
        self, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any], call: str
    ) -> Canvas:
        """A copy with extra keyword arguments and options (checked, in ``call``'s name)."""
        raise NotImplementedError

    def _link(self, kind: str, signatures: list[Any]) -> None:
        """Attach ``signatures`` as ``kind`` ("link" or "link_error"), in place."""
        raise NotImplementedError

    def _freeze_all(self) -> None:
        """Fix every task id and group id inside."""
        raise NotImplementedError

    def _launch(self, args: tuple[Any, ...], plan: Plan, links: Links) -> None:
        """Add the messages that start this now (``args`` first) to ``plan``."""
        raise NotImplementedError

    def _step(self) -> Step:
        """This canvas as one step of a message's ``chain`` (sent later by a worker)."""
        raise NotImplementedError

    def _result(self, parent: AsyncResult | GroupResult | None) -> AsyncResult | GroupResult:
        """The result handle the caller gets."""
        raise NotImplementedError

    def _groups(self, plan: Plan) -> None:
        """Record every group's members in ``plan`` (for ``GroupResult.restore``)."""
        raise NotImplementedError

    # Sending ----------------------------------------------------------------------------

    def plan(self, args: Sequence[Any] = ()) -> tuple[Plan, Any]:
        """The messages sending this publishes, and the result handle the caller gets."""
        node = self.copy()
        node._freeze_all()
        plan = Plan()
        node._launch(tuple(args), plan, NO_LINKS)
        node._groups(plan)
        return plan, node._result(None)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Send it (``args`` go before the stored ones); blocks until the server has it.

        Takes the options of ``Task.apply_async``, ``link`` and ``link_error`` included.
        """
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

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Send it, as ``delay`` does: ``chain(a.s(1), b.s())()``, ``group(...)(5)``."""
        return self.apply_async(args, kwargs)

    def __or__(self, other: Canvas) -> Canvas:
        return chain(self, other)

    # Links ------------------------------------------------------------------------------

    def link(self, callback: Canvas) -> Canvas:
        """Send ``callback`` when this succeeds, with its result first; returns ``callback``.

        On a chain it follows the last step; on a chord, the body.
        """
        self._link("link", [callback])
        return callback

    def link_error(self, errback: Canvas) -> Canvas:
        """Send ``errback`` with the failed task's id first when a task of this fails for
        good (on a chain or group: any of its tasks); returns ``errback``."""
        self._link("link_error", [errback])
        return errback

    def on_error(self, errback: Canvas) -> Canvas:
        """``link_error``, returning this canvas (so calls can be chained)."""
        self._link("link_error", [errback])
        return self

    def _linked(self, options: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
        """``options`` without the links, and the links to attach."""
        rest = dict(options)
        links = [(kind, _as_list(rest.pop(kind))) for kind in _LINKS if kind in rest]
        return rest, [(kind, value) for kind, value in links if value]


class Signature(Canvas):
    """A task name with arguments and delivery options, ready to send or to compose.

    ``task_type`` is the task object when it is registered in this process: calling the
    signature runs it here, as calling the task does.
    """

    def __init__(
        self,
        client: Client,
        task: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        options: Mapping[str, Any] | None = None,
        immutable: bool = False,
        task_type: Callable[..., Any] | None = None,
    ) -> None:
        self.client = client
        self.task = task
        self.args = list(args or ())
        self.kwargs = dict(kwargs or {})
        self.options: dict[str, Any] = {}
        self.immutable = immutable
        self.type = task_type
        self._merge(options or {}, "signature")

    def __repr__(self) -> str:
        return f"{self.task}.{'si' if self.immutable else 's'}(*{self.args!r}, **{self.kwargs!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, now, as calling the task does; nothing is sent.

        Arguments given here go first, as a parent's result would: ``add.s(2)(3)`` is
        ``add(3, 2)``; an immutable signature ignores them. Use ``delay()`` or
        ``apply_async()`` to send it.
        """
        if self.type is None:
            raise TypeError(
                f"{self!r} cannot run here: task {self.task!r} is not registered in this "
                "process; send it with delay() or apply_async()"
            )
        if self.immutable:
            return self.type(*self.args, **self.kwargs)
        return self.type(*args, *self.args, **{**self.kwargs, **kwargs})

    def _merge(self, options: Mapping[str, Any], call: str) -> None:
        # Checked together with what is already set: countdown here and eta there clash.
        # Links add to those already attached.
        merged = {**self.options, **options}
        for kind in _LINKS:
            if options.get(kind) is not None:
                merged[kind] = [*_as_list(self.options.get(kind)), *_as_list(options[kind])]
        self.options = check_options(merged, call)

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
            task_type=self.type,
        )

    def copy(self) -> Signature:
        return self.clone()

    def configured(
        self, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any], call: str
    ) -> Signature:
        copy = self.clone()
        copy._merge(options, call)
        if not self.immutable:  # an immutable signature keeps its arguments, as in Celery
            copy.kwargs.update(kwargs or {})
        return copy

    def _link(self, kind: str, signatures: list[Any]) -> None:
        self._merge({kind: signatures}, kind)

    @property
    def id(self) -> str | None:
        """The task id, once fixed (``freeze``, ``set(task_id=...)``)."""
        task_id = self.options.get("task_id")
        return None if task_id is None else str(task_id)

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
        """The JSON form carried inside messages (chain steps, chord callbacks, links)."""
        if self.options.get("eta") is not None:
            raise ValueError(
                f"{self!r}: eta is not supported inside a chain or chord; use countdown"
            )
        checked = self.delayed().message  # reject bad arguments before anything is sent
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
            link=checked.link,
            link_error=checked.link_error,
        )

    def plan(self, args: Sequence[Any] = ()) -> tuple[Plan, AsyncResult]:
        # The common case, kept cheap: one message, no copy.
        item = self.delayed(() if self.immutable else args)
        return Plan(items=[item]), AsyncResult(item.message.id, self.client)

    def _freeze_all(self) -> None:
        self.freeze()

    def _launch(self, args: tuple[Any, ...], plan: Plan, links: Links) -> None:
        plan.items.append(self.delayed(() if self.immutable else args, links))

    def _step(self) -> WireSignature:
        return self.to_wire()

    def _result(self, parent: AsyncResult | GroupResult | None) -> AsyncResult:
        return AsyncResult(self.freeze(), self.client, parent=parent)

    def _groups(self, plan: Plan) -> None:
        pass


def _unpack(given: tuple[Any, ...]) -> list[Any]:
    """``f(a, b)`` and ``f([a, b])`` (or any iterable) mean the same."""
    if len(given) == 1 and not isinstance(given[0], Canvas) and isinstance(given[0], Iterable):
        return list(given[0])
    return list(given)


def _not_canvas(kind: str, item: Any) -> TypeError:
    return TypeError(
        f"a {kind} takes task signatures (task.s(...)), chains, groups and chords; "
        f"{item!r} is not one"
    )


def _chain_steps(items: Sequence[Any]) -> list[Signature | group]:
    """The steps of a chain of ``items``: chains spliced in, a chord as its header and
    body, each part copied."""
    steps: list[Signature | group] = []
    for item in items:
        if isinstance(item, chain):
            steps.extend(step.copy() for step in item.steps)
        elif isinstance(item, chord):
            steps.extend(_chain_steps([item.header, item.required_body()]))
        elif isinstance(item, Signature | group):
            steps.append(item.copy())
        else:
            raise _not_canvas("chain", item)
    for before, after in itertools.pairwise(steps):
        if isinstance(before, group) and isinstance(after, group):
            raise TypeError(
                f"in a chain, {after!r} follows {before!r} directly: put a task between "
                "them to receive the first group's results"
            )
    return steps


def _group_members(items: Sequence[Any]) -> list[Signature | chain]:
    """The members of a group of ``items``: inner groups flattened, chords as chains."""
    members: list[Signature | chain] = []
    for item in items:
        if isinstance(item, group):
            members.extend(member.copy() for member in item.members)
        elif isinstance(item, chain | chord):
            # One copy per level: copying again at each level would double per level.
            flat = item.copy() if isinstance(item, chain) else item.as_chain()
            if len(flat.steps) == 1:
                members.extend(_group_members(flat.steps))
                continue
            if isinstance(flat.steps[-1], group):
                raise TypeError(
                    f"{item!r} ends in a group, so it cannot be a member of a group or a "
                    "chord header: add a task after it to collect that group's results"
                )
            members.append(flat)
        elif isinstance(item, Signature):
            members.append(item.clone())
        else:
            raise _not_canvas("group", item)
    return members


class chain(Canvas):  # noqa: N801 - Celery's spelling
    """Steps run one after another, each receiving the previous result first.

    A step may be a group (its members receive the previous result; a step after it
    receives the list of their results, as a chord callback) or a chord.
    """

    def __init__(self, *tasks: Canvas | Iterable[Canvas]) -> None:
        items = _unpack(tasks)
        if not items:
            raise ValueError("a chain needs at least one step")
        self.steps = _chain_steps(items)
        self.client = self.steps[0].client

    def __repr__(self) -> str:
        return " | ".join(repr(s) for s in self.steps)

    def copy(self) -> chain:
        return chain(self.steps)

    def configured(
        self, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any], call: str
    ) -> chain:
        rest, links = self._linked(options)
        first = self.steps[0].configured(kwargs, rest, call)
        configured = chain(first, *self.steps[1:])
        for kind, signatures in links:
            configured._link(kind, signatures)
        return configured

    def to_wire(self) -> WireSignature:
        """This chain as one signature with the later steps attached (for ``link=``)."""
        step = self._step()
        if not isinstance(step, WireSignature):
            raise TypeError(f"{self!r} starts with a group: it cannot be a link")
        return step

    def _link(self, kind: str, signatures: list[Any]) -> None:
        if kind == "link":
            last = self.steps[-1]
            if isinstance(last, group):
                raise TypeError(f"link= on {self!r}: a chain ending in a group takes no link")
            last._link(kind, signatures)
        else:  # an errback for whichever step fails
            for step in self.steps:
                step._link(kind, signatures)

    def _freeze_all(self) -> None:
        for step in self.steps:
            step._freeze_all()

    def _launch(self, args: tuple[Any, ...], plan: Plan, links: Links) -> None:
        first, after = self.steps[0], self.steps[1:]
        if isinstance(first, group):
            first._launch_then(args, plan, links, after)
        else:
            first._launch(args, plan, replace(links, chain=[s._step() for s in after]))

    def _step(self) -> Step:
        first = self.steps[0]._step()
        later = [s._step() for s in self.steps[1:]]
        return first.model_copy(update={"chain": [*first.chain, *later]})

    def _result(self, parent: AsyncResult | GroupResult | None) -> AsyncResult | GroupResult:
        for step in self.steps:
            parent = step._result(parent)
        assert parent is not None
        return parent

    def _groups(self, plan: Plan) -> None:
        for step in self.steps:
            step._groups(plan)


class group(Canvas):  # noqa: N801 - Celery's spelling
    """Members run in parallel; the result lists their results in order.

    A member may be a chain or a chord (its result is its last task's); a group given
    as a member is flattened into this one.
    """

    def __init__(self, *tasks: Canvas | Iterable[Canvas], group_id: str | None = None) -> None:
        items = _unpack(tasks)
        self.members = _group_members(items)
        self.group_id = check_task_id(group_id) if group_id else None
        if not self.members:
            raise ValueError("a group needs at least one member")
        self.client = self.members[0].client

    def __repr__(self) -> str:
        return f"group({self.members!r})"

    def copy(self) -> group:
        return group(self.members, group_id=self.group_id)

    def configured(
        self, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any], call: str
    ) -> group:
        rest, links = self._linked(options)
        group_id = rest.pop("task_id", None) or self.group_id
        members = [m.configured(kwargs, rest, call) for m in self.members]
        configured = group(members, group_id=group_id)
        for kind, signatures in links:
            configured._link(kind, signatures)
        return configured

    def __or__(self, other: Canvas) -> Canvas:
        if isinstance(other, Signature):
            return chord(self, other)
        return super().__or__(other)

    def _link(self, kind: str, signatures: list[Any]) -> None:
        if kind == "link":
            wire_links(kind, signatures)  # a wrong value is named as everywhere else
            raise TypeError(
                f"link= is not supported on {self!r}: to run a task with the results of "
                "every member, make it a chord: group(...) | task.s()"
            )
        for member in self.members:
            member._link(kind, signatures)

    def _freeze_all(self) -> None:
        if self.group_id is None:
            self.group_id = new_task_id()
        for member in self.members:
            member._freeze_all()

    def _launch(self, args: tuple[Any, ...], plan: Plan, links: Links) -> None:
        self._launch_then(args, plan, links, [])

    def _launch_then(
        self, args: tuple[Any, ...], plan: Plan, links: Links, after: Sequence[Signature | group]
    ) -> None:
        """Start the members now; ``after`` (if any) runs once they all succeeded, its
        first step receiving their results (a chord)."""
        assert self.group_id is not None
        chord_ref = None
        if after:
            callback, later = after[0], after[1:]
            assert isinstance(callback, Signature)  # two groups in a row were refused
            body = callback.to_wire().model_copy(
                update={
                    "chain": [s._step() for s in later],
                    "group_id": links.group_id,
                    "group_index": links.group_index,
                    "chord": links.chord,
                }
            )
            chord_ref = ChordRef(id=callback.freeze(), size=len(self.members), callback=body)
        for index, member in enumerate(self.members):
            membership = Links(group_id=self.group_id, group_index=index, chord=chord_ref)
            member._launch(args, plan, membership)

    def _step(self) -> GroupStep:
        return GroupStep(group=[m._step() for m in self.members], group_id=self.group_id)

    def _result(self, parent: AsyncResult | GroupResult | None) -> GroupResult:
        assert self.group_id is not None
        results = [m._result(None) for m in self.members]
        handles = [r for r in results if isinstance(r, AsyncResult)]
        assert len(handles) == len(results)  # members never end in a group
        return GroupResult(self.group_id, handles, self.client)

    def _groups(self, plan: Plan) -> None:
        assert self.group_id is not None
        plan.groups[self.group_id] = [_tail_id(m) for m in self.members]
        for member in self.members:
            member._groups(plan)


def _tail_id(member: Signature | chain) -> str:
    """The id whose result is ``member``'s result (its last task's)."""
    last = member.steps[-1] if isinstance(member, chain) else member
    assert isinstance(last, Signature)
    return last.freeze()


class chord(Canvas):  # noqa: N801 - Celery's spelling
    """A group whose results, in order, are passed to ``body`` once every member succeeded.

    ``chord(header, body)``, or ``chord(header)(body)`` to send it at once. The body
    may be a chain (its first task receives the results). If a member fails for good
    (after its retries), the body never runs and the chord's result (the body's id)
    becomes FAILURE naming that member.
    """

    def __init__(
        self, header: Canvas | Iterable[Canvas], body: Signature | chain | None = None
    ) -> None:
        self.header = header.copy() if isinstance(header, group) else group(header)
        if body is not None and not isinstance(body, Signature | chain):
            raise TypeError(f"a chord body must be a task signature or a chain, not {body!r}")
        self.body = None if body is None else body.copy()
        self.client = self.header.client

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"

    def __call__(self, body: Signature | chain | None = None, **options: Any) -> Any:
        """Send the chord, with ``body`` as its body when given: ``chord(header)(body)``."""
        target = self if body is None else chord(self.header, body)
        return target.apply_async(**options)

    def required_body(self) -> Signature | chain:
        """The body, or a TypeError saying how to give one."""
        if self.body is None:
            raise TypeError(
                f"{self!r} has no body: give one, chord(header, body), or call it with "
                "one, chord(header)(body)"
            )
        return self.body

    def as_chain(self) -> chain:
        """The same work as a chain: the header group, then the body."""
        return chain(self.header, self.required_body())

    def copy(self) -> chord:
        return chord(self.header, self.body)

    def configured(
        self, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any], call: str
    ) -> chord:
        rest, links = self._linked(options)
        configured = chord(self.header.configured(kwargs, rest, call), self.body)
        for kind, signatures in links:
            configured._link(kind, signatures)
        return configured

    def _link(self, kind: str, signatures: list[Any]) -> None:
        # Celery's rule: a chord's links and errbacks are its body's.
        self.required_body()._link(kind, signatures)

    def plan(self, args: Sequence[Any] = ()) -> tuple[Plan, Any]:
        return self.as_chain().plan(args)
