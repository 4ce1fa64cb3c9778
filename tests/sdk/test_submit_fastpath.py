"""The cheap submit path builds exactly what the straightforward one built.

Task ids are made without ``uuid.UUID``, arguments are checked with one JSON dump,
and the envelope is built from the fields that differ from its defaults: each
shortcut is compared here with the plain construction it replaces.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from celeriac.protocol.arguments import _check_each, check_arguments
from celeriac.protocol.envelope import ChordRef, Signature, TaskMessage
from celeriac.publishing import task_publication
from celeriac.submitting import (
    Links,
    Submission,
    absolute_time,
    build_message,
    new_task_id,
)


def test_new_task_id_is_a_canonical_uuid4() -> None:
    ids = [new_task_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for task_id in ids:
        parsed = uuid.UUID(task_id)
        assert str(parsed) == task_id
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    # Every variant nibble (8, 9, a, b) shows up: the two random bits are really used.
    assert {task_id[19] for task_id in ids} == set("89ab")


def _plain(sub: Submission, task_id: str) -> TaskMessage:
    """The envelope as built before: every field passed explicitly."""
    return TaskMessage(
        id=task_id,
        task=sub.task,
        args=list(sub.args),
        kwargs=dict(sub.kwargs),
        queue=sub.queue,
        expires=absolute_time(sub.expires, "expires"),
        parent_id=sub.links.parent_id,
        root_id=sub.links.root_id,
        group_id=sub.links.group_id,
        group_index=sub.links.group_index,
        chord=sub.links.chord,
        chain=list(sub.links.chain),
        headers=dict(sub.headers or {}),
        ignore_result=sub.ignore_result,
        max_retries=sub.max_retries,
        time_limit=sub.time_limit,
        soft_time_limit=sub.soft_time_limit,
    )


_CALLBACK = Signature(task="m.done", args=[1], options={"queue": "q2"})
_SUBMISSIONS = [
    Submission(task="m.noop", queue="q1"),
    Submission(task="m.add", queue="q1", args=(1, 2.5, "é", None), kwargs={"x": [1, {"y": 2}]}),
    Submission(task="m.add", queue="q1", args=[], kwargs={}, headers={"a": "b"}),
    Submission(task="m.add", queue="q1", ignore_result=True, max_retries=0, time_limit=3),
    Submission(task="m.add", queue="q1", soft_time_limit=1.5, expires=datetime(2030, 1, 1)),
    Submission(
        task="m.add",
        queue="q1",
        links=Links(
            parent_id="p",
            root_id="r",
            group_id="g",
            group_index=0,
            chord=ChordRef(id="c", size=2, callback=_CALLBACK),
            chain=[_CALLBACK],
        ),
    ),
    Submission(task="m.add", queue="q1", args=(1e16, -0.0, 2**70, True), ignore_result=False),
]


@pytest.mark.parametrize("sub", _SUBMISSIONS)
def test_envelope_bytes_match_the_plain_construction(sub: Submission) -> None:
    message = build_message(sub)
    plain = _plain(sub, message.id)
    assert message == plain
    assert message.dumps() == plain.dumps()
    at = datetime(2030, 2, 3, 4, 5, 6, tzinfo=UTC)
    for due in (None, at):
        fast, slow = task_publication(message, due), task_publication(plain, due)
        assert (fast.subject, fast.payload, fast.headers) == (
            slow.subject,
            slow.payload,
            slow.headers,
        )


def test_truthy_non_bool_ignore_result_is_still_validated() -> None:
    with pytest.raises(ValueError):
        build_message(Submission(task="m.add", queue="q1", ignore_result=""))  # type: ignore[arg-type]


class _Opaque:
    pass


def _cycle() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        ((1, "a", None, [1, 2], {"k": 1.5}), {"x": True}),
        ((1, _Opaque()), {}),
        ((), {"when": datetime.now(UTC)}),
        ((float("nan"),), {}),
        ((1,), {"inf": float("inf")}),
        ((b"bytes",), {}),
        (({1, 2},), {}),
        ((_cycle(),), {}),
        ((), {1: 2}),
        ((), {(1, 2): 3}),
        ((_Opaque(),), {3: 4}),
        ((1,), {"ok": 1, 5: _Opaque()}),
    ],
)
def test_one_dump_decides_like_one_dump_per_argument(
    args: Sequence[Any], kwargs: Mapping[str, Any]
) -> None:
    expected = _outcome(_check_each, args, kwargs)
    assert _outcome(check_arguments, args, kwargs) == expected


def _outcome(check: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    try:
        check("m.add", args, kwargs)
    except Exception as exc:  # the type and text are what is compared
        return f"{type(exc).__name__}: {exc}"
    return "ok"
