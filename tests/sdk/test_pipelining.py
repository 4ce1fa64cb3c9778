"""A pipelined batch reports exactly the messages that were not stored, by index."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig
from nats.js.errors import APIError, NoStreamResponseError

from celeriac.pipelining import publish_pipelined
from celeriac.publishing import Publication

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.drain()


async def _stream(nc: Client, max_msg_size: int | None = None) -> str:
    name = f"PIPE_{uuid.uuid4().hex[:10]}"
    config = StreamConfig(name=name, subjects=[f"{name}.>"], max_msg_size=max_msg_size)
    await nc.jetstream().add_stream(config)
    return name


def _pub(subject: str, msg_id: str | None = None) -> Publication:
    headers = {"Nats-Msg-Id": msg_id or str(uuid.uuid4())}
    return Publication(subject=subject, payload=b'{"x":1}', headers=headers)


async def test_every_message_stored_through_a_small_window(nc: Client) -> None:
    stream = await _stream(nc)
    pubs = [_pub(f"{stream}.a") for _ in range(250)]
    assert await publish_pipelined(nc, pubs, patience=5, window=7) == {}
    info = await nc.jetstream().stream_info(stream)
    assert info.state.messages == 250


async def test_duplicates_are_acknowledged_not_errors(nc: Client) -> None:
    stream = await _stream(nc)
    pubs = [_pub(f"{stream}.a", "same-id") for _ in range(5)]
    assert await publish_pipelined(nc, pubs, patience=5) == {}
    assert (await nc.jetstream().stream_info(stream)).state.messages == 1


async def test_errors_are_reported_by_index(nc: Client) -> None:
    stream = await _stream(nc, max_msg_size=160)
    too_big = Publication(subject=f"{stream}.a", payload=b"x" * 400, headers={})
    pubs = [_pub(f"{stream}.a"), _pub("nostream.here"), too_big, _pub(f"{stream}.b")]
    errors = await publish_pipelined(nc, pubs, patience=5)
    assert sorted(errors) == [1, 2]
    assert isinstance(errors[1], NoStreamResponseError)
    assert isinstance(errors[2], APIError)
    assert (await nc.jetstream().stream_info(stream)).state.messages == 2


async def test_silence_fails_the_rest_with_timeouts(nc: Client) -> None:
    # A plain subscriber takes the messages and never answers: no acknowledgement comes.
    subject = f"silent.{uuid.uuid4().hex}"
    sub = await nc.subscribe(subject)
    try:
        pubs = [_pub(subject) for _ in range(5)]
        errors = await publish_pipelined(nc, pubs, patience=0.3, window=2)
    finally:
        await sub.unsubscribe()
    assert sorted(errors) == [0, 1, 2, 3, 4]
    assert all(isinstance(e, TimeoutError) for e in errors.values())


async def test_empty_batch(nc: Client) -> None:
    assert await publish_pipelined(nc, [], patience=1) == {}
