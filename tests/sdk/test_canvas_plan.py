"""What a canvas sends, without a server: nested shapes, links, bounds and call forms.

Each message a plan publishes is written as text: ``task(args)`` then ``> steps`` for
its chain, ``@i`` for its group index, ``^ callback`` for its chord; a group step is
``[member, member]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from celeriac import Celeriac, chain, chord, group
from celeriac.async_result import GroupResult
from celeriac.canvas import Canvas
from celeriac.protocol.envelope import GroupStep, TaskMessage
from celeriac.protocol.envelope import Signature as WireSignature
from celeriac.submitting import MAX_CANVAS_BYTES
from celeriac.worker_runtime.decoding import Rejection, decode_task

# Nothing listens here: planning never connects.
NOWHERE = "nats://127.0.0.1:1"

app = Celeriac("plan-tests", NOWHERE, default_queue="plan")


@app.task(name="a")
def a(*values: int) -> int:
    return sum(values)


@app.task(name="b")
def b(*values: int) -> list[int]:
    return list(values)


def _call(step: WireSignature | GroupStep) -> str:
    if isinstance(step, GroupStep):
        text = "[" + ", ".join(_call(m) for m in step.group) + "]"
    else:
        text = f"{step.task}{tuple(step.args)}".replace(",)", ")")
        if step.group_index is not None:
            text += f" @{step.group_index}"
    return text + "".join(f" > {_call(s)}" for s in step.chain)


def text(message: TaskMessage) -> str:
    """One published message, as the module docstring writes it."""
    out = f"{message.task}{tuple(message.args)}".replace(",)", ")")
    out += "".join(f" > {_call(s)}" for s in message.chain)
    if message.group_index is not None:
        out += f" @{message.group_index}"
    if message.chord is not None:
        out += f" ^ {_call(message.chord.callback)}"
    return out


SHAPES: list[tuple[str, Callable[[], Canvas], list[str]]] = [
    ("chain", lambda: a.s(1) | a.s(2) | b.si(3), ["a(1) > a(2) > b(3)"]),
    ("group in a chain", lambda: chain(a.s(1), group(b.s(), b.s(2)), a.s()),
     ["a(1) > [b(), b(2)] > a()"]),
    ("group ending a chain", lambda: chain(a.s(1), group(b.s(), b.s())), ["a(1) > [b(), b()]"]),
    ("group starting a chain", lambda: chain(group(a.s(1), a.s(2)), b.s(), a.s()),
     ["a(1) @0 ^ b() > a()", "a(2) @1 ^ b() > a()"]),
    ("chain in a group", lambda: group(chain(a.s(1), b.s()), a.s(2)),
     ["a(1) > b() @0", "a(2) @1"]),
    ("chord in a chain", lambda: chain(a.s(1), chord([b.s(), b.s()], a.s()), b.s()),
     ["a(1) > [b(), b()] > a() > b()"]),
    ("chain as chord body", lambda: chord([a.s(1), a.s(2)], chain(b.s(), a.s(3))),
     ["a(1) @0 ^ b() > a(3)", "a(2) @1 ^ b() > a(3)"]),
    ("group in a group, flattened", lambda: group(a.s(1), group(a.s(2), group(a.s(3)))),
     ["a(1) @0", "a(2) @1", "a(3) @2"]),
    ("chord in a group", lambda: group(chord([a.s(1)], b.s()), a.s(2)),
     ["a(1) @0 ^ b() @0", "a(2) @1"]),
    ("chain in a chain in a group",
     lambda: group(chain(a.s(1), chain(a.s(2), group(b.s(), b.s()), a.s()))),
     ["a(1) > a(2) > [b(), b()] > a() @0"]),
    ("group of chains as a chord header", lambda: group(chain(a.s(1), a.s()), a.s(2)) | b.s(),
     ["a(1) > a() @0 ^ b()", "a(2) @1 ^ b()"]),
]  # fmt: skip


@pytest.mark.parametrize(("shape", "expected"), [c[1:] for c in SHAPES], ids=[c[0] for c in SHAPES])
def test_nested_shapes_send_these_messages(
    shape: Callable[[], Canvas], expected: list[str]
) -> None:
    plan, _ = shape().plan()
    assert [text(item.message) for item in plan.items] == expected
    for item in plan.items:  # every message is valid on the wire, as a worker reads it
        assert isinstance(decode_task(item.message.dumps()), TaskMessage)


def test_ids_are_fixed_and_result_handles_follow_the_shape() -> None:
    flow = chain(a.s(1), group(chain(b.s(), a.s()), b.s()), a.s(), group(a.s(), b.s()))
    plan, result = flow.plan()
    (first,) = [item.message for item in plan.items]
    assert isinstance(result, GroupResult)  # the chain ends in a group
    callback = first.chain[1]
    assert isinstance(callback, WireSignature)
    inner, last = first.chain[0], first.chain[2]
    assert isinstance(inner, GroupStep) and isinstance(last, GroupStep)
    assert last.group_id == result.id
    assert [m.options["task_id"] for m in last.group] == [r.id for r in result.results]
    # Every group's members are recorded under its id, by the ids of their last tasks.
    member = inner.group[0]
    assert isinstance(member, WireSignature)
    assert plan.groups[str(inner.group_id)] == [
        member.chain[0].options["task_id"],  # type: ignore[union-attr]
        inner.group[1].options["task_id"],  # type: ignore[union-attr]
    ]
    assert set(plan.groups) == {inner.group_id, last.group_id}
    # Sending twice sends new ids: the canvas given is not changed by sending it.
    again, _ = flow.plan()
    assert again.items[0].message.id != first.id


def test_a_chord_body_receives_the_membership_of_its_chord() -> None:
    """A chord inside a chord header: its callback counts in the outer chord."""
    plan, result = (group(chord([a.s(1), a.s(2)], b.s()), a.s(3)) | a.s()).plan()
    inner = plan.items[0].message.chord
    outer = plan.items[2].message.chord
    assert inner is not None and outer is not None
    assert outer.id == result.id and inner.id != outer.id
    assert inner.callback.chord == outer and inner.callback.group_index == 0


def test_call_arguments_go_to_the_first_tasks_immutable_ones_ignore_them() -> None:
    plan, _ = group(a.s(1), a.si(2), chain(a.s(3), a.s())).plan((10,))
    assert [text(item.message) for item in plan.items] == [
        "a(10, 1) @0",
        "a(2) @1",
        "a(10, 3) > a() @2",
    ]
    plan, _ = chord([a.s(1), a.s(2)], b.s()).plan((5,))
    assert [item.message.args for item in plan.items] == [[5, 1], [5, 2]]


def test_a_signature_called_runs_here() -> None:
    assert a.s(1, 2)(3) == 6
    assert b.s(1)(2, 3) == [2, 3, 1]  # the call's arguments first
    assert b.si(1)(2) == [1]  # immutable: the call's arguments are ignored, as in Celery
    with pytest.raises(TypeError, match=r"'elsewhere' is not registered in this process"):
        app.signature("elsewhere")()


def test_links_go_where_celery_puts_them() -> None:
    done, failed = b.s(), b.s()
    plan, _ = (
        chain(a.s(1), a.s(2)).configured(None, {"link": done, "link_error": failed}, "t").plan()
    )
    (message,) = [item.message for item in plan.items]
    step = message.chain[0]
    assert isinstance(step, WireSignature)
    # link: after the last step; link_error: on every step.
    assert message.link == [] and [s.task for s in step.link] == ["b"]
    assert len(message.link_error) == 1 and len(step.link_error) == 1
    sig = a.s(1)
    assert sig.link(done) is done and sig.on_error(failed) is sig
    sig.link_error(failed)
    (item,) = sig.plan()[0].items
    assert len(item.message.link) == 1 and len(item.message.link_error) == 2
    # A chord's links are its body's.
    plan, _ = chord([a.s(1)], b.s()).configured(None, {"link": done}, "t").plan()
    ref = plan.items[0].message.chord
    assert ref is not None and [s.task for s in ref.callback.link] == ["b"]
    # A chain can be a link: it runs as one signature with its steps attached.
    (item,) = a.s(1).set(link=chain(b.s(), a.s())).plan()[0].items
    assert [_call(s) for s in item.message.link] == ["b() > a()"]


def nest(levels: int) -> Canvas:
    """A chain holding a group holding such a chain...: each group nests one deeper."""
    if levels == 0:
        return a.s()
    return chain(a.s(), group(nest(levels - 1), a.s()), a.s())


def linked(levels: int) -> Canvas:
    """A signature whose errback has an errback...: each level nests one deeper."""
    sig = a.s()
    for _ in range(levels):
        sig = a.s().set(link_error=sig)
    return sig


def test_too_deep_a_canvas_is_refused_naming_the_limit() -> None:
    nest(9).plan()
    linked(10).plan()
    with pytest.raises(ValueError, match=r"nested 11 levels deep; at most 10 \(MAX_CANVAS_DEPTH\)"):
        nest(10).plan()
    with pytest.raises(ValueError, match=r"nested 11 levels deep; at most 10 \(MAX_CANVAS_DEPTH\)"):
        linked(11).plan()


def test_too_large_a_canvas_is_refused_naming_the_limit() -> None:
    big = "x" * (MAX_CANVAS_BYTES // 4)
    chain(a.s(), *[b.s(big)] * 3).plan()
    with pytest.raises(
        ValueError, match=f"more than the {MAX_CANVAS_BYTES} \\(MAX_CANVAS_BYTES\\)"
    ):
        chain(a.s(), *[b.s(big)] * 4).plan()


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: chain(a.s(), group(a.s(), a.s()), group(b.s(), b.s())),
         "follows .* directly: put a task between them"),
        (lambda: group(chain(a.s(), group(a.s(), b.s()))),
         "ends in a group, so it cannot be a member"),
        (lambda: chord([a.s()], chain(a.s(), group(a.s(), b.s()))) | a.s(), None),
        (lambda: chain(a.s(), chord([a.s()])), "has no body: give one"),
        (lambda: chord([a.s()]).plan(), "has no body"),
        (lambda: chord([a.s()], group(a.s())), "a chord body must be a task signature or a chain"),
        (lambda: group(a.s(), b.s()).configured(None, {"link": b.s()}, "apply_async"),
         r"link= is not supported on group.*make it a chord"),
        (lambda: a.s().set(link=group(a.s())), r"link takes a task signature .* not group"),
        (lambda: a.s().set(link_error=chord([a.s()], b.s())), "link_error takes a task signature"),
        (lambda: a.s().set(link=chain(group(a.s()), b.s())).plan(), "starts with a group"),
        (lambda: chain(a.s(), group(a.s())).link(b.s()), "a chain ending in a group takes no link"),
        (lambda: chain(a.s(), b.s().set(eta=__import__("datetime").datetime(2100, 1, 1))).plan(),
         "eta is not supported inside a chain"),
    ],
)  # fmt: skip
def test_shapes_that_cannot_be_sent_are_refused_clearly(
    build: Callable[[], Any], error: str | None
) -> None:
    if error is None:  # a chord whose body ends in a group, followed by a task: fine
        build().plan()
        return
    with pytest.raises(TypeError if "eta" not in error else ValueError, match=error):
        build()


def test_hand_written_canvases_are_checked_by_the_worker() -> None:
    def doc(**fields: Any) -> bytes:
        return json.dumps({"id": "t1", "task": "a", "queue": "q", **fields}).encode()

    deep: dict[str, Any] = {"task": "a"}
    for _ in range(11):
        deep = {"group": [deep]}
    refused: Sequence[tuple[bytes, str]] = [
        (doc(chain=[deep]), "nested 12 levels deep, more than the 10 allowed"),
        (doc(chain=[{"group": []}]), "group"),
        (doc(chain=[{"group": [{"task": "a"}], "group_id": "a b"}]), "invalid group id"),
        (doc(link=[{"task": ""}]), "invalid task name"),
        (doc(chain=[{"tusk": "a"}]), "task"),
    ]
    for body, error in refused:
        rejected = decode_task(body)
        assert isinstance(rejected, Rejection), body
        assert error in rejected.error, rejected.error
    assert isinstance(
        decode_task(doc(chain=[{"group": [{"task": "a"}]}, {"task": "b"}])), TaskMessage
    )
