"""PubAcks: JetStream publishes confirmed through one shared reply subscription."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from celeriac_devenv.nats import NatsServer
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import StreamConfig
from nats.js.errors import APIError, BadRequestError, NoStreamResponseError

from celeriac.pubacks import PubAcks
from tests.support import await_until

pytestmark = pytest.mark.integration

_SWEEPER = "celeriac-puback-sweeper"


def _sweepers() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == _SWEEPER and not t.done()]


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    conn = await nats.connect(nats_url)
    yield conn
    await conn.close()


@pytest.fixture
async def stream(nc: Client) -> AsyncIterator[str]:
    """A throwaway stream capturing ``<name>.>``; yields the subject prefix."""
    name = f"pubacks_{uuid.uuid4().hex[:12]}"
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"]))
    yield name
    await js.delete_stream(name)


async def test_publishes_are_stored_in_order_with_headers(nc: Client, stream: str) -> None:
    acks = PubAcks(nc, timeout=5)
    try:
        await acks.publish(f"{stream}.a", b"first", headers={"X-Test": "1"})
        await acks.publish(f"{stream}.b", b"second")
    finally:
        await acks.close()
    js = nc.jetstream()
    info = await js.stream_info(stream)
    assert info.state.messages == 2
    first = await js.get_msg(stream, 1)
    second = await js.get_msg(stream, 2)
    assert (first.subject, first.data) == (f"{stream}.a", b"first")
    assert first.headers is not None and first.headers.get("X-Test") == "1"
    assert (second.subject, second.data) == (f"{stream}.b", b"second")


async def test_many_concurrent_publishes_are_all_confirmed(nc: Client, stream: str) -> None:
    acks = PubAcks(nc, timeout=10)
    count = 500
    try:
        await asyncio.gather(*(acks.publish(f"{stream}.m", str(i).encode()) for i in range(count)))
        assert not acks._waiting
    finally:
        await acks.close()
    js = nc.jetstream()
    info = await js.stream_info(stream)
    assert info.state.messages == count
    stored = {(await js.get_msg(stream, seq)).data for seq in range(1, count + 1)}
    assert stored == {str(i).encode() for i in range(count)}


async def test_subject_without_a_stream_has_no_responders(nc: Client) -> None:
    acks = PubAcks(nc, timeout=5)
    try:
        with pytest.raises(NoStreamResponseError):
            await acks.publish(f"nostream_{uuid.uuid4().hex}.x", b"lost")
        assert not acks._waiting
    finally:
        await acks.close()


async def test_wrong_expected_sequence_is_refused_with_the_server_description(
    nc: Client, stream: str
) -> None:
    acks = PubAcks(nc, timeout=5)
    try:
        with pytest.raises(APIError) as info:
            await acks.publish(
                f"{stream}.seq",
                b"x",
                headers={"Nats-Expected-Last-Subject-Sequence": "999"},
            )
    finally:
        await acks.close()
    # The typed subclass js.publish would raise, with the server's own words.
    assert isinstance(info.value, BadRequestError)
    assert info.value.err_code == 10071  # wrong last sequence
    assert info.value.description and "sequence" in info.value.description.lower()
    assert (await nc.jetstream().stream_info(stream)).state.messages == 0


async def test_oversized_message_is_refused(nc: Client) -> None:
    name = f"pubacks_small_{uuid.uuid4().hex[:12]}"
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"], max_msg_size=16))
    acks = PubAcks(nc, timeout=5)
    try:
        with pytest.raises(BadRequestError) as info:
            await acks.publish(f"{name}.big", b"x" * 1024)
        assert info.value.err_code == 10054  # message size exceeds maximum
        assert info.value.description
        assert "size" in info.value.description.lower()
        # A small one on the same stream still goes through.
        await acks.publish(f"{name}.small", b"ok")
        assert (await js.stream_info(name)).state.messages == 1
    finally:
        await acks.close()
        await js.delete_stream(name)


@pytest.fixture
async def gone(private_nats: NatsServer) -> AsyncIterator[tuple[PubAcks, str]]:
    """PubAcks (0.5 s timeout) that published once, then lost its server; and the prefix."""
    conn = await nats.connect(private_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    name = f"pubacks_{uuid.uuid4().hex[:12]}"
    await conn.jetstream().add_stream(StreamConfig(name=name, subjects=[f"{name}.>"]))
    acks = PubAcks(conn, timeout=0.5)
    try:
        await acks.publish(f"{name}.ok", b"before")
        private_nats.stop()
        yield acks, name
    finally:
        await acks.close()
        # nats-py writes what it buffered while disconnected to the dead socket on close.
        with contextlib.suppress(ConnectionError):
            await conn.close()
        assert conn.is_closed


async def test_timeout_when_the_server_is_gone(gone: tuple[PubAcks, str]) -> None:
    acks, name = gone
    started = time.monotonic()
    with pytest.raises(NatsTimeoutError):
        async with asyncio.timeout(10):
            await acks.publish(f"{name}.lost", b"after")
    assert time.monotonic() - started < 5
    assert not acks._waiting


async def test_close_is_idempotent_and_leaves_no_task(nc: Client, stream: str) -> None:
    acks = PubAcks(nc, timeout=5)
    await acks.close()  # before any publish: nothing to drop
    await acks.publish(f"{stream}.c", b"x")
    await acks.close()
    await acks.close()
    assert not _sweepers()
    assert acks._sub is None
    # Usable again after close: the reply subscription is made anew.
    await acks.publish(f"{stream}.c", b"y")
    await acks.close()
    assert not _sweepers()
    assert (await nc.jetstream().stream_info(stream)).state.messages == 2


async def test_sweeper_ends_when_nothing_waits(nc: Client, stream: str) -> None:
    acks = PubAcks(nc, timeout=0.4)
    try:
        await acks.publish(f"{stream}.s", b"x")

        async def no_sweeper() -> bool:
            return not _sweepers()

        await await_until(no_sweeper, timeout=5, what="the sweeper to end")
        await acks.publish(f"{stream}.s", b"y")  # restarts it as needed
    finally:
        await acks.close()
    assert not _sweepers()


async def test_close_with_a_publish_in_flight_does_not_strand_it(
    gone: tuple[PubAcks, str],
) -> None:
    acks, name = gone
    pending = asyncio.create_task(acks.publish(f"{name}.lost", b"after"))

    async def waiting() -> bool:
        return bool(acks._waiting)

    await await_until(waiting, timeout=5, what="the publish to wait for its ack")
    await acks.close()
    # It fails (as a timeout) instead of waiting forever for a reply nobody reads.
    done, _ = await asyncio.wait({pending}, timeout=5)
    assert pending in done, "the publish was left waiting after close()"
    with pytest.raises(NatsTimeoutError):
        pending.result()
    assert not acks._waiting
