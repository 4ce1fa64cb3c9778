"""The in-memory NATS on its own: subjects, streams and buckets behave as a nats-server's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import pytest
from nats.aio.client import Client
from nats.errors import MaxPayloadError
from nats.js.api import StreamConfig
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoStreamResponseError

from celeriac.exceptions import ScheduleNotSupported
from celeriac.pubacks import PubAcks
from celeriac.testing.client import MemoryClient
from celeriac.testing.jetstream import MemoryJetStream
from celeriac.testing.server import MemoryNats
from celeriac.testing.streams import parse_at, subject_matches


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("celeriac.tasks.orders", "celeriac.tasks.orders", True),
        ("celeriac.tasks.orders", "celeriac.tasks.emails", False),
        ("celeriac.tasks.*", "celeriac.tasks.orders", True),
        ("celeriac.tasks.*", "celeriac.tasks.orders.x", False),
        ("celeriac.schedules.orders.>", "celeriac.schedules.orders.id-1", True),
        ("celeriac.schedules.orders.>", "celeriac.schedules.orders.periodic.daily", True),
        ("celeriac.schedules.orders.>", "celeriac.schedules.orders", False),
        ("$KV.celeriac_results.>", "$KV.celeriac_results.a.b", True),
        (">", "anything.at.all", True),
        ("a.*.c", "a.b", False),
    ],
)
def test_subject_matching(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


@pytest.mark.parametrize(
    ("schedule", "due"),
    [
        ("@at 2030-01-02T03:04:05.000000Z", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("@at 2030-01-02T03:04:05+00:00", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("@every 5m", None),
        ("0 0 2 * * *", None),
    ],
)
def test_schedules_with_a_due_time(schedule: str, due: datetime | None) -> None:
    assert parse_at(schedule) == due


async def test_publish_acknowledgements_through_the_sdks_own_pubacks() -> None:
    server = MemoryNats()
    nc = MemoryClient(server)
    js = MemoryJetStream(server)
    await js.add_stream(StreamConfig(name="S", subjects=["s.>"], duplicate_window=60))
    acks = PubAcks(cast(Client, nc), timeout=5)
    await acks.publish("s.one", b"1", headers={"Nats-Msg-Id": "a"})
    await acks.publish("s.one", b"1 again", headers={"Nats-Msg-Id": "a"})  # dropped
    await acks.publish("s.two", b"2")
    info = await js.stream_info("S")
    assert (info.state.messages, info.state.last_seq) == (2, 2)
    with pytest.raises(NoStreamResponseError):
        await acks.publish("nowhere", b"x")
    with pytest.raises(MaxPayloadError):
        await nc.publish("s.big", b"x" * (server.max_payload + 1))
    await acks.close()


async def test_a_stream_without_schedules_refuses_a_delayed_message() -> None:
    server = MemoryNats()
    js = MemoryJetStream(server)
    await js.add_stream(StreamConfig(name="S", subjects=["s.>"]))
    acks = PubAcks(cast(Client, MemoryClient(server)), timeout=5)
    with pytest.raises(Exception) as refused:
        await acks.publish("s.x", b"", headers={"Nats-Schedule": "@at 2030-01-01T00:00:00Z"})
    assert getattr(refused.value, "err_code", None) == 10188
    assert not isinstance(refused.value, ScheduleNotSupported)  # the broker translates it
    await acks.close()


async def test_key_value_create_update_delete_and_watch() -> None:
    server = MemoryNats()
    js = MemoryJetStream(server)
    kv = await js.create_key_value(bucket="b")
    first = await kv.create("k", b"1")
    with pytest.raises(KeyWrongLastSequenceError):
        await kv.create("k", b"2")
    with pytest.raises(KeyWrongLastSequenceError):
        await kv.update("k", b"2", last=first + 10)
    second = await kv.update("k", b"2", last=first)
    assert (await kv.get("k")).value == b"2"
    watcher = await kv.watch("k")
    current = await watcher.updates.get()
    assert (current.value, current.revision) == (b"2", second)
    assert await watcher.updates.get() is None  # the end of the current values
    await kv.put("k", b"3")
    assert (await watcher.updates.get()).value == b"3"
    await watcher.stop()
    await kv.delete("k")
    with pytest.raises(KeyNotFoundError):
        await kv.get("k")
    assert await kv.create("k", b"again") > second  # a deleted key can be created anew
    info = await js.stream_info("KV_b")
    assert info.state.messages == 1  # one message per key is kept
