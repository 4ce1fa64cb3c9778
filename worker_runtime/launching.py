"""Messages launched by a finished task: the next chain step, a group's members, a chord
callback, linked tasks and errbacks; and which tasks can no longer run when it failed.

Every id is known before it is published (fixed at submit time, or derived from the
parent's id and the step's position), which makes publishing again after a
redelivery a no-op and lets a failure name the very ids the steps would have had.
A step's options go through the SDK's one submission path, so a step is checked
exactly as ``apply_async`` would check it.

Group and chord membership travels along a chain: a member that is a chain carries
it from step to step, and its last step counts in the chord.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celeriac.protocol.envelope import ChordRef, GroupStep, Signature, TaskMessage
from celeriac.protocol.names import is_valid_task_id
from celeriac.submitting import Delayed, Links, prepare

# Namespace for ids derived from a parent's id (steps submitted without ids).
_DERIVED_IDS = uuid.UUID("5b7f61a2-2f3c-4c55-9a57-7a1f0b1c9e01")

Step = Signature | GroupStep


def derived_id(seed: str) -> str:
    """The id derived from ``seed`` (a parent's id, or a position under it)."""
    return str(uuid.uuid5(_DERIVED_IDS, seed))


def step_id(parent_id: str, step: Signature) -> str:
    """The task id of a step: its own, or one derived from its parent's id."""
    given = step.options.get("task_id")
    if isinstance(given, str) and is_valid_task_id(given):
        return given
    return derived_id(parent_id)


def group_id_of(step: GroupStep, seed: str) -> str:
    """The id of a group step launched under ``seed``: its own, or a derived one."""
    return step.group_id or derived_id(f"{seed}/group")


def member_seed(seed: str, index: int) -> str:
    """What member ``index`` of a group launched under ``seed`` derives its id from."""
    return f"{seed}/{index}"


@dataclass(frozen=True)
class Membership:
    """The group and chord a message belongs to; counted when its chain is done."""

    group_id: str | None = None
    group_index: int | None = None
    chord: ChordRef | None = None

    @classmethod
    def of(cls, holder: TaskMessage | Signature) -> Membership:
        """The membership ``holder`` carries."""
        return cls(holder.group_id, holder.group_index, holder.chord)

    @property
    def empty(self) -> bool:
        """True for a message in no group."""
        return self.group_id is None and self.group_index is None and self.chord is None

    def key(self, member_id: str) -> str:
        """The member's key in its chord's progress: its index (else its id)."""
        return str(self.group_index) if self.group_index is not None else member_id


NO_MEMBERSHIP = Membership()


def _parse_expires(value: Any) -> Any:
    # Carried on the wire as RFC 3339 text; anything else is checked as given.
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


def signature_message(
    step: Signature,
    *,
    task_id: str,
    parent: TaskMessage,
    args: list[Any],
    chain: Sequence[Step] = (),
    membership: Membership = NO_MEMBERSHIP,
) -> Delayed:
    """The message for ``step`` launched by ``parent`` (with its countdown)."""
    options = {
        **step.options,
        "task_id": task_id,
        "expires": _parse_expires(step.options.get("expires")),
        "headers": {**parent.headers, **(step.options.get("headers") or {})},
        "link": step.link or None,
        "link_error": step.link_error or None,
    }
    links = Links(
        parent_id=parent.id,
        root_id=parent.root_id or parent.id,
        group_id=membership.group_id,
        group_index=membership.group_index,
        chord=membership.chord,
        chain=chain,
    )
    return prepare(
        step.task,
        args,
        step.kwargs,
        options,
        call=f"the {step.task} step after {parent.task}",
        default_queue=parent.queue,
        links=links,
    )


def launch(
    steps: Sequence[Step],
    *,
    result: Any,
    parent: TaskMessage,
    seed: str,
    membership: Membership = NO_MEMBERSHIP,
) -> list[Delayed]:
    """The messages starting ``steps`` after ``parent`` returned ``result``.

    ``seed`` is what ids not given are derived from (the parent's id). ``membership``
    travels to the end of the steps. Raises ValueError for a step that cannot be sent.
    """
    step, rest = steps[0], steps[1:]
    after = [*step.chain, *rest]
    if isinstance(step, Signature):
        args = list(step.args) if step.immutable else [result, *step.args]
        carried = membership if not membership.empty else Membership.of(step)
        message = signature_message(
            step,
            task_id=step_id(seed, step),
            parent=parent,
            args=args,
            chain=after,
            membership=carried,
        )
        return [message]
    group_id = group_id_of(step, seed)
    chord = None
    if after:
        chord = _chord_after(group_id, len(step.group), after, membership)
    elif not membership.empty:
        raise ValueError(
            f"group {group_id} ends a chain that is itself a member of group "
            f"{membership.group_id}: a group member cannot end in a group; add a task "
            "after it to collect its results"
        )
    messages: list[Delayed] = []
    for index, member in enumerate(step.group):
        messages += launch(
            [member],
            result=result,
            parent=parent,
            seed=member_seed(seed, index),
            membership=Membership(group_id, index, chord),
        )
    return messages


def _chord_after(
    group_id: str, size: int, after: Sequence[Step], membership: Membership
) -> ChordRef:
    """The chord a group followed by ``after`` forms: its first step is the callback."""
    callback = after[0]
    if not isinstance(callback, Signature):
        raise ValueError(
            f"group {group_id} is followed directly by another group: put a task between "
            "them to receive the first group's results"
        )
    carried = membership if not membership.empty else Membership.of(callback)
    body = callback.model_copy(
        update={
            "chain": [*callback.chain, *after[1:]],
            "group_id": carried.group_id,
            "group_index": carried.group_index,
            "chord": carried.chord,
        }
    )
    return ChordRef(id=step_id(group_id, callback), size=size, callback=body)


def callback_message(message: TaskMessage, results: list[Any]) -> Delayed:
    """The chord callback of ``message`` (a member), receiving the members' ``results``."""
    assert message.chord is not None
    ref = message.chord
    step = ref.callback
    args = list(step.args) if step.immutable else [results, *step.args]
    launched = signature_message(
        step,
        task_id=ref.id,
        parent=message,
        args=args,
        chain=step.chain,
        membership=Membership.of(step),
    )
    # Its parent is the group (as in Celery), not the member that happened to finish last.
    callback = launched.message.model_copy(update={"parent_id": message.group_id or message.id})
    return Delayed(callback, launched.countdown, launched.eta)


def linked_message(
    parent: TaskMessage, kind: str, index: int, sig: Signature, *, first: Any, owner: str
) -> Delayed:
    """Entry ``index`` of the ``link`` or ``link_error`` list of the task ``owner``,
    launched by ``parent`` and receiving ``first`` (a result, or the failed task's id).

    Its id, unless given, derives from the owner, the list and the position, so the
    same errback attached to many tasks runs once for each.
    """
    args = list(sig.args) if sig.immutable else [first, *sig.args]
    task_id = step_id(f"{owner}/{kind}/{index}", sig)
    try:
        return signature_message(sig, task_id=task_id, parent=parent, args=args, chain=sig.chain)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{kind}[{index}] ({sig.task}) of {owner}: {exc}") from exc


def dependants(steps: Sequence[Step], seed: str) -> Iterator[tuple[str, Signature]]:
    """Every task of ``steps`` (what was to follow the task ``seed``), with its id.

    The ids are the ones ``launch`` gives, so a failure marks exactly those. Walks a
    long chain without recursion; only nesting (bounded by the envelope) recurses.
    """
    frames = [iter(steps)]
    while frames:
        step = next(frames[-1], None)
        if step is None:
            frames.pop()
            continue
        if isinstance(step, Signature):
            seed = step_id(seed, step)
            yield seed, step
        else:
            for index, member in enumerate(step.group):
                yield from dependants([member], member_seed(seed, index))
            seed = group_id_of(step, seed)
        if step.chain:
            frames.append(iter(step.chain))
