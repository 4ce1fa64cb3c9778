"""Delivery options through every public spelling: the same checks, the same words.

``apply_async``, ``send_task``, signatures, ``set`` and canvas all go through one
submission path, so an invalid option fails the same way whichever way it is given,
before anything is sent, and a valid one reaches the task message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pytest
from nats.aio.client import Client

from celeriac import Celeriac, chain, group
from celeriac.protocol import names
from celeriac.protocol.envelope import TaskMessage

# Nothing listens here: an invalid call must fail before it tries to connect.
NOWHERE = "nats://127.0.0.1:1"


def make_app(url: str = NOWHERE, queue: str = "options") -> tuple[Celeriac, Any]:
    app = Celeriac("options-tests", url, default_queue=queue)

    @app.task(name="opt.add")
    def add(a: int, b: int) -> int:
        return a + b

    return app, add


Call = Callable[[Celeriac, Any, dict[str, Any]], Any]


class Spelling(NamedTuple):
    """One public way to give delivery options, and the call name its errors use."""

    name: str
    call: str
    make: Call


def _run(factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(factory())


def _chain(app: Celeriac, add: Any, o: dict[str, Any]) -> Any:
    return chain(add.s(1, 2), add.s(3)).apply_async(**o)


def _group(app: Celeriac, add: Any, o: dict[str, Any]) -> Any:
    return group(add.s(1, 2), add.s(3, 4)).apply_async(**o)


SPELLINGS = [
    Spelling("apply_async", "apply_async", lambda app, add, o: add.apply_async((1, 2), **o)),
    Spelling("aapply_async", "aapply_async",
             lambda app, add, o: _run(lambda: add.aapply_async((1, 2), **o))),
    Spelling("send_task", "send_task", lambda app, add, o: app.send_task("opt.add", (1, 2), **o)),
    Spelling("asend_task", "asend_task",
             lambda app, add, o: _run(lambda: app.asend_task("opt.add", (1, 2), **o))),
    Spelling("task.signature", "signature", lambda app, add, o: add.signature((1, 2), **o)),
    Spelling("app.signature", "signature",
             lambda app, add, o: app.signature("opt.add", (1, 2), **o)),
    Spelling("s().set", "set", lambda app, add, o: add.s(1, 2).set(**o)),
    Spelling("s().apply_async", "apply_async", lambda app, add, o: add.s(1, 2).apply_async(**o)),
    Spelling("s().aapply_async", "aapply_async",
             lambda app, add, o: _run(lambda: add.s(1, 2).aapply_async(**o))),
    Spelling("chain.apply_async", "apply_async", _chain),
    Spelling("group.apply_async", "apply_async", _group),
]  # fmt: skip


class Invalid(NamedTuple):
    """Options that must be refused, and the error (``{call}``: the call's name)."""

    case: str
    options: dict[str, Any]
    error: type[Exception]
    pattern: str


_SOON = datetime.now(UTC) + timedelta(hours=1)

INVALID = [
    Invalid("negative countdown", {"countdown": -30}, ValueError,
            "countdown must be a non-negative number of seconds .* not -30"),
    Invalid("countdown and eta", {"countdown": 5, "eta": _SOON}, ValueError,
            "{call}: give countdown or eta, not both"),
    Invalid("expires before eta", {"eta": _SOON, "expires": _SOON - timedelta(minutes=10)},
            ValueError, r"{call}: expires \(.*\) must be after the task is due"),
    Invalid("expires before countdown", {"countdown": 600, "expires": 60}, ValueError,
            r"{call}: expires \(.*\) must be after the task is due"),
    Invalid("priority", {"priority": 5}, TypeError,
            "unknown option 'priority' for {call}; known options: "),
    Invalid("link not a signature", {"link": "x"}, TypeError,
            r"link takes a task signature \(task.s\(...\)\) or a list of them, not 'x'"),
    Invalid("link_error not a signature", {"link_error": [print]}, TypeError,
            "link_error takes a task signature"),
    Invalid("serializer", {"serializer": "pickle"}, TypeError,
            "unknown option 'serializer' for {call}"),
    Invalid("zero time limit", {"time_limit": 0}, ValueError,
            "time_limit must be a positive number"),
    Invalid("string soft limit", {"soft_time_limit": "5"}, ValueError, "soft_time_limit must be"),
    Invalid("negative max_retries", {"max_retries": -1}, ValueError,
            "max_retries must be a whole number"),
    Invalid("bad queue", {"queue": "Bad Queue"}, ValueError, "invalid queue name"),
    Invalid("bad task id", {"task_id": "a b"}, ValueError, "invalid task id"),
    Invalid("headers not strings", {"headers": {"a": 1}}, TypeError, "headers must map strings"),
    Invalid("ignore_result not bool", {"ignore_result": "yes"}, TypeError,
            "ignore_result must be True"),
    Invalid("eta not datetime", {"eta": "tomorrow"}, TypeError, "eta must be a datetime"),
    Invalid("expires not a time", {"expires": "later"}, TypeError, "expires must be a datetime"),
    Invalid("countdown beyond a century", {"countdown": 1e12}, ValueError, "countdown must be"),
    Invalid("webhook not http", {"webhook": "ftp://x"}, ValueError, "webhook url: must be an http"),
]  # fmt: skip


@pytest.mark.parametrize("spelling", SPELLINGS, ids=[s.name for s in SPELLINGS])
@pytest.mark.parametrize("invalid", INVALID, ids=[c.case for c in INVALID])
def test_invalid_option_is_refused_in_every_spelling(spelling: Spelling, invalid: Invalid) -> None:
    app, add = make_app()
    with pytest.raises(invalid.error, match=invalid.pattern.format(call=spelling.call)):
        spelling.make(app, add, dict(invalid.options))
    app.close()


def test_unknown_option_lists_the_known_ones() -> None:
    _, add = make_app()
    with pytest.raises(TypeError) as info:
        add.apply_async((1, 2), priority=5)
    assert str(info.value) == (
        "unknown option 'priority' for apply_async; known options: countdown, eta, expires, "
        "headers, ignore_result, link, link_error, max_retries, queue, soft_time_limit, task_id, "
        "time_limit, webhook"
    )


def test_later_set_is_checked_with_earlier_options() -> None:
    """``countdown`` set once and ``eta`` set later clash just as if given together."""
    _, add = make_app()
    sig = add.s(1, 2).set(countdown=5)
    with pytest.raises(ValueError, match="set: give countdown or eta, not both"):
        sig.set(eta=_SOON)
    with pytest.raises(ValueError, match="apply_async: give countdown or eta, not both"):
        sig.apply_async(eta=_SOON)


def test_eta_cannot_ride_inside_a_chain() -> None:
    _, add = make_app()
    with pytest.raises(ValueError, match="eta is not supported inside a chain"):
        chain(add.s(1, 2), add.s(3).set(eta=_SOON)).plan()


def test_none_means_unset() -> None:
    """Celery code passes ``countdown=None`` and friends: they are simply not set."""
    _, add = make_app()
    sig = add.s(1, 2).set(countdown=None, eta=None, expires=None, time_limit=5)
    assert sig.options == {"queue": "options", "time_limit": 5}


# Every option a message carries, and what the message holds for it.
VALID = {
    "headers": {"tenant": "acme"},
    "ignore_result": True,
    "max_retries": 1,
    "time_limit": 5,
    "soft_time_limit": 2.5,
    "expires": 3600,
}


async def take(nc: Client, queue: str) -> TaskMessage:
    stream = names.stream_name(queue)
    sub = await nc.jetstream().pull_subscribe_bind(names.CONSUMER_NAME, stream)
    [msg] = await sub.fetch(1, timeout=10)
    await msg.ack_sync()
    await sub.unsubscribe()
    return TaskMessage.model_validate_json(msg.data)


@pytest.mark.integration
@pytest.mark.parametrize("spelling", SPELLINGS, ids=[s.name for s in SPELLINGS])
async def test_valid_options_reach_the_message_in_every_spelling(
    spelling: Spelling, nats_url: str, queue: str, raw_nc: Client
) -> None:
    app, add = make_app(nats_url, queue)
    task_id = f"opt-{spelling.name.replace('.', '-').replace('()', '')}-{queue}"
    options = {**VALID, "task_id": task_id, "queue": queue}
    made = await asyncio.to_thread(spelling.make, app, add, options)
    if spelling.call in ("signature", "set"):  # these only build the signature: send it
        await made.aapply_async()
    message = await take(raw_nc, queue)
    if spelling.name.startswith("group"):
        assert message.group_id == task_id  # a group's task_id names the group
    else:
        assert message.id == task_id
    assert message.queue == queue and message.args[:2] == [1, 2]
    assert message.headers == VALID["headers"]
    assert message.ignore_result is True and message.max_retries == 1
    assert (message.time_limit, message.soft_time_limit) == (5, 2.5)
    assert message.expires is not None
    assert timedelta(minutes=59) < message.expires - datetime.now(UTC) <= timedelta(hours=1)
    if spelling.name.startswith("chain"):
        assert [step.task for step in message.chain] == ["opt.add"]
    await app.aclose()
