"""Submit-time validation and the wire shape of a publish, without a server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from celeriac.app import Celeriac, declare_queues_from_env
from celeriac.protocol import names
from celeriac.protocol.envelope import TaskMessage
from celeriac.publishing import rfc3339, task_publication
from celeriac.submitting import Submission, absolute_time, build_message, prepare


def _sub(**kw: object) -> Submission:
    base: dict[str, object] = {"task": "m.add", "queue": "q1", "args": (1, 2)}
    base.update(kw)
    return Submission(**base)  # type: ignore[arg-type]


def test_build_message_defaults() -> None:
    message = build_message(_sub(kwargs={"x": [1, "a", None]}))
    assert message.task == "m.add"
    assert message.args == [1, 2]
    assert message.kwargs == {"x": [1, "a", None]}
    assert names.is_valid_task_id(message.id)


@pytest.mark.parametrize(
    ("kw", "error", "needle"),
    [
        ({"queue": "Bad Queue"}, ValueError, "invalid queue name"),
        ({"task_id": "has space"}, ValueError, "invalid task id"),
        ({"task_id": ".starts-with-dot"}, ValueError, "invalid task id"),
        ({"task_id": "periodic.nightly"}, ValueError, "'periodic.' \\(reserved\\)"),
        ({"args": (1, object())}, TypeError, "argument 1 of m.add"),
        ({"kwargs": {"when": datetime.now(UTC)}}, TypeError, "argument 'when' of m.add"),
        ({"kwargs": {"v": float("nan")}}, TypeError, "argument 'v'"),
        ({"args": "abc"}, TypeError, "must be a list or tuple"),
        ({"kwargs": {1: 2}}, TypeError, "keyword names"),
        ({"countdown": -1}, ValueError, "countdown"),
        ({"countdown": 1, "eta": datetime.now(UTC)}, ValueError, "not both"),
        ({"expires": "tomorrow"}, TypeError, "expires"),
        ({"headers": {"a": 1}}, TypeError, "headers"),
    ],
)
def test_bad_input_is_rejected_clearly(kw: dict[str, object], error: type, needle: str) -> None:
    args, kwargs = kw.pop("args", (1, 2)), kw.pop("kwargs", {})
    with pytest.raises(error, match=needle):
        prepare("m.add", args, kwargs, kw, call="apply_async", default_queue="q1")  # type: ignore[arg-type]


def test_expires_seconds_and_datetime() -> None:
    before = datetime.now(UTC)
    message = build_message(_sub(expires=30))
    assert message.expires is not None
    assert before + timedelta(seconds=29) < message.expires < before + timedelta(seconds=31)
    naive = datetime(2030, 1, 2, 3, 4, 5)
    assert absolute_time(naive, "x") == naive.replace(tzinfo=UTC)


def test_publication_now() -> None:
    message = build_message(_sub(task_id="abc"))
    pub = task_publication(message)
    assert pub.subject == "celeriac.tasks.q1"
    assert pub.headers == {"Nats-Msg-Id": "abc", "Celeriac-Task": "m.add", "Celeriac-Protocol": "1"}
    assert not pub.scheduled
    assert TaskMessage.model_validate_json(pub.payload) == message


def test_publication_scheduled() -> None:
    message = build_message(_sub(task_id="abc"))
    due = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    pub = task_publication(message, due)
    assert pub.subject == "celeriac.schedules.q1.abc"
    assert pub.headers["Nats-Schedule"] == "@at 2030-05-06T07:08:09.123456Z"
    assert pub.headers["Nats-Schedule-Target"] == "celeriac.tasks.q1"
    assert pub.headers["Nats-Msg-Id"] == "abc"
    assert json.loads(pub.payload)["eta"].startswith("2030-05-06T07:08:09")


def test_rfc3339_converts_to_utc() -> None:
    plus2 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC).astimezone(
        __import__("datetime").timezone(timedelta(hours=2))
    )
    assert rfc3339(plus2) == "2030-01-01T12:00:00.000000Z"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, True), ("", True), ("1", True), ("true", True), ("0", False), ("false", False),
     ("OFF", False), ("no", False)],
)  # fmt: skip
def test_declare_queues_env(value: str | None, expected: bool) -> None:
    assert declare_queues_from_env(value) is expected


def test_app_defaults_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERIAC_NATS_URL", "nats://example:4222")
    monkeypatch.setenv("CELERIAC_DECLARE_QUEUES", "0")
    app = Celeriac("x")
    assert app.nats_url == "nats://example:4222"
    assert app.declare_queues is False
    assert Celeriac("y", "nats://other:1", declare_queues=True).declare_queues is True


def test_task_decorator_options() -> None:
    app = Celeriac("x", "nats://127.0.0.1:1", default_queue="dq")

    @app.task
    def plain(a: int) -> int:
        return a * 2

    @app.task(name="custom", queue="other", max_retries=5, bind=True, ignore_result=True)
    async def bound(self: object, a: int) -> int:
        return a

    assert plain.name.endswith("test_task_decorator_options.<locals>.plain")
    assert plain.queue == "dq"
    assert plain(4) == 8
    assert not plain.is_async
    assert app.tasks["custom"] is bound
    assert bound.is_async and bound.bind and bound.ignore_result
    assert (bound.queue, bound.max_retries) == ("other", 5)
    with pytest.raises(ValueError, match="invalid queue name"):
        app.task(queue="NOPE")


def test_signature_rejects_unknown_options() -> None:
    app = Celeriac("x", "nats://127.0.0.1:1")

    @app.task
    def t() -> None:
        return None

    with pytest.raises(TypeError, match="unknown option"):
        t.s().set(priority=3)
