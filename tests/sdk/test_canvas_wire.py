"""The worker's side of nested canvases, without a server: what a finished task launches,
and which tasks a failure marks, for hand-written messages (no ids given) as well.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from celeriac.protocol.envelope import GroupStep, Signature, TaskMessage
from celeriac.submitting import Delayed
from celeriac.worker_runtime.continuation import ContinuationError, next_messages
from celeriac.worker_runtime.launching import (
    Membership,
    callback_message,
    dependants,
    launch,
    linked_message,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def message(**fields: Any) -> TaskMessage:
    return TaskMessage.model_validate({"id": "root", "task": "t.first", "queue": "q", **fields})


def run_all(first: TaskMessage) -> list[TaskMessage]:
    """Every message the canvas of ``first`` launches when every task succeeds (returning
    its own id), in launch order; each chord's callback once."""
    launched: list[TaskMessage] = []
    pending, callbacks = [first], set()
    while pending:
        current = pending.pop(0)
        produced = [d.message for d in next_messages(current, current.id)]
        if not current.chain and current.chord is not None and current.chord.id not in callbacks:
            callbacks.add(current.chord.id)
            produced.append(callback_message(current, ["..."]).message)
        launched += produced
        pending += produced
    return launched


NESTED = {
    "chain": [
        {"task": "t.a"},
        {"group": [
            {"task": "t.b", "chain": [{"task": "t.c"}]},
            {"group": [{"task": "t.d"}, {"task": "t.e"}], "chain": [{"task": "t.f"}]},
        ]},
        {"task": "t.g", "chain": [{"task": "t.h"}]},
        {"group": [{"task": "t.i"}, {"task": "t.j"}]},
    ],
}  # fmt: skip


def test_a_failure_marks_exactly_the_tasks_that_would_have_run() -> None:
    first = message(**NESTED)
    ran = run_all(first)
    assert sorted(m.task for m in ran) == [f"t.{x}" for x in "abcdefghij"]
    marked = list(dependants(first.chain, first.id))
    assert {task_id for task_id, _ in marked} == {m.id for m in ran}
    assert len(marked) == len(ran)
    # Derived ids do not depend on who computes them: launching again gives the same.
    assert [m.id for m in run_all(first)] == [m.id for m in ran]


def test_membership_travels_to_the_end_of_a_chain() -> None:
    ran = {m.task: m for m in run_all(message(**NESTED))}
    c, f, g = ran["t.c"], ran["t.f"], ran["t.g"]
    b = ran["t.b"]
    # t.b starts member 0 of the group; its chain's last task (t.c) counts in the chord.
    assert (b.group_index, c.group_index) == (0, 0)
    assert b.chord is not None and b.chord == c.chord and b.chord.callback.task == "t.g"
    # Member 1 is itself a chord: its callback t.f carries member 1's place.
    assert (f.group_id, f.group_index, f.chord) == (b.group_id, 1, b.chord)
    # The outer callback receives the results in order and runs the rest of the chain.
    assert g.id == b.chord.id and g.args[0] == ["..."]
    h, last = g.chain
    assert isinstance(h, Signature) and h.task == "t.h" and isinstance(last, GroupStep)
    assert ran["t.i"].group_index == 0 and ran["t.i"].chord is None


def test_a_step_receives_the_result_unless_immutable() -> None:
    first = message(chain=[{"task": "t.a", "args": [1]}, {"task": "t.b", "immutable": True}])
    (nxt,) = next_messages(first, 41)
    assert nxt.message.args == [41, 1] and nxt.message.parent_id == "root"
    (after,) = next_messages(nxt.message, 42)
    assert after.message.args == [] and after.message.root_id == "root"


def test_a_group_step_and_what_follows_make_a_chord() -> None:
    group = {"group": [{"task": "t.a"}, {"task": "t.b"}], "group_id": "g1"}
    first = message(chain=[group, {"task": "t.c", "options": {"task_id": "cb"}}, {"task": "t.d"}])
    members = [d.message for d in next_messages(first, 7)]
    assert [(m.task, m.args, m.group_id, m.group_index) for m in members] == [
        ("t.a", [7], "g1", 0),
        ("t.b", [7], "g1", 1),
    ]
    ref = members[0].chord
    assert ref == members[1].chord and ref is not None
    assert (ref.id, ref.size, ref.callback.task) == ("cb", 2, "t.c")
    assert [s.task for s in ref.callback.chain] == ["t.d"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"chain": [{"group": [{"task": "t.a"}]}, {"group": [{"task": "t.b"}]}]},
         "followed directly by another group"),
        ({"group_id": "outer", "group_index": 0,
          "chord": {"id": "x", "size": 1, "callback": {"task": "t.x"}},
          "chain": [{"group": [{"task": "t.a"}]}]},
         "a group member cannot end in a group"),
        ({"chain": [{"task": "t.a", "options": {"queue": "Bad Queue"}}]}, "invalid queue name"),
        ({"link": [{"task": "t.a", "options": {"countdown": -1}}]}, "link[0] (t.a) of root"),
    ],
)  # fmt: skip
def test_what_cannot_be_sent_is_refused_before_anything_is(
    fields: dict[str, Any], error: str
) -> None:
    with pytest.raises(ContinuationError) as info:
        next_messages(message(**fields), 1)
    assert error in str(info.value)


def test_links_and_errbacks_get_ids_of_their_own() -> None:
    """The same errback on many tasks runs for each; a redelivery sends it again under the
    same id (so the server drops it), whoever launches it."""
    first, other = message(), message(id="other")
    sig = Signature(task="t.note")
    ids = {
        linked_message(first, kind, index, sig, first=None, owner=owner).message.id
        for kind in ("link", "link_error")
        for index in (0, 1)
        for owner in ("root", "other")
    }
    assert len(ids) == 8
    again = linked_message(other, "link_error", 0, sig, first="root", owner="root")
    assert again.message.id in ids and again.message.args == ["root"]


def test_a_long_chain_is_walked_without_recursion() -> None:
    steps = [{"task": "t.step"}] * 5000
    marked = list(dependants(message(chain=steps).chain, "root"))
    assert len(marked) == 5000 and len({task_id for task_id, _ in marked}) == 5000
    first: list[Delayed] = launch(message(chain=steps).chain, result=0,
                                  parent=message(), seed="root")  # fmt: skip
    assert first[0].message.id == marked[0][0] and len(first[0].message.chain) == 4999
    assert Membership().empty


def test_the_nested_example_of_the_protocol_doc_runs_as_it_says() -> None:
    text = DOC.read_text()
    found = re.search(r"<!-- nested-example -->\s*```json\n(.*?)```", text, re.S)
    assert found, "docs/protocol.md lost its nested-example block"
    first = TaskMessage.model_validate(json.loads(found.group(1)))
    ran = run_all(first)
    assert [(m.task, m.id, m.args) for m in ran] == [
        ("b", "t-b", ["t-a"]),
        ("c", "t-c", ["t-a"]),
        ("d", "t-d", [["..."]]),
        ("e", "t-e", ["t-d"]),
    ]
    assert {m.group_id for m in ran[:2]} == {"g-1"}
