"""A message sent while a task's code runs is that task's child."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from celeriac.current import Caller, calling_task, set_calling_task
from celeriac.submitting import Links, Submission, build_message


@pytest.fixture
def caller() -> Iterator[Caller]:
    running = Caller("a" * 32, "r" * 32)
    before = set_calling_task(running)
    yield running
    set_calling_task(before)


@pytest.mark.parametrize(
    ("links", "expected"),
    [
        # Sent on its own: the running task's child, in its workflow.
        (Links(), ("a" * 32, "r" * 32)),
        # The first step of a canvas sent by the task keeps the canvas's own root, if any.
        (Links(group_id="g" * 32, root_id="s" * 32), ("a" * 32, "s" * 32)),
        # A continuation the worker launches names its parent itself.
        (Links(parent_id="p" * 32, root_id="q" * 32), ("p" * 32, "q" * 32)),
    ],
)
def test_the_running_task_is_the_parent(
    caller: Caller, links: Links, expected: tuple[str, str]
) -> None:
    message = build_message(Submission(task="m.add", queue="q1", links=links))
    assert (message.parent_id, message.root_id) == expected


def test_outside_task_code_a_message_has_no_parent() -> None:
    assert calling_task() is None
    message = build_message(Submission(task="m.add", queue="q1"))
    assert (message.parent_id, message.root_id) == (None, None)
