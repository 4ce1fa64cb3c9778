"""One queue, one owner: the claim rule (pure), and the claim kept in real stream metadata."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from celeriac.operator import queues
from celeriac.operator.claims import (
    OWNER_KEY,
    Claim,
    Verdict,
    claimed,
    decide,
    owner_of,
    refusal,
    released,
    user_metadata,
)
from celeriac.protocol import jetstream, names

ME = owner_of("a", "emails")
# What nats-server 2.11+ adds to every stream's metadata by itself.
SERVER_KEYS = {"_nats.level": "1", "_nats.req.level": "0", "_nats.ver": "2.12.0"}


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        # No stream yet: the first TaskQueue creates it and owns it.
        (None, Claim(Verdict.ADOPT)),
        # A stream declared by the SDK or a worker, or made by an operator without claims.
        ({}, Claim(Verdict.ADOPT)),
        (SERVER_KEYS, Claim(Verdict.ADOPT)),
        ({"team": "mail"}, Claim(Verdict.ADOPT)),
        # A blank claim is no claim.
        ({OWNER_KEY: ""}, Claim(Verdict.ADOPT)),
        ({OWNER_KEY: "  "}, Claim(Verdict.ADOPT)),
        # Ours, with or without other keys around it.
        ({OWNER_KEY: "a/emails"}, Claim(Verdict.OWNED, "a/emails")),
        ({**SERVER_KEYS, OWNER_KEY: "a/emails", "team": "mail"}, Claim(Verdict.OWNED, "a/emails")),
        # Someone else's: another namespace, another name, or a prefix of ours.
        ({OWNER_KEY: "b/emails"}, Claim(Verdict.CLAIMED, "b/emails")),
        ({OWNER_KEY: "a/mail"}, Claim(Verdict.CLAIMED, "a/mail")),
        ({OWNER_KEY: "a/emails-2"}, Claim(Verdict.CLAIMED, "a/emails-2")),
        ({OWNER_KEY: "A/emails"}, Claim(Verdict.CLAIMED, "A/emails")),
    ],
)
def test_decide(metadata: Mapping[str, str] | None, expected: Claim) -> None:
    assert decide(metadata, ME) == expected


@pytest.mark.parametrize(
    ("metadata", "after_claim", "after_release"),
    [
        (None, {OWNER_KEY: ME}, {}),
        (SERVER_KEYS, {OWNER_KEY: ME}, {}),
        ({"team": "mail"}, {"team": "mail", OWNER_KEY: ME}, {"team": "mail"}),
        ({OWNER_KEY: "b/emails", "x": "1"}, {OWNER_KEY: ME, "x": "1"}, {"x": "1"}),
    ],
)
def test_claim_and_release_keep_other_keys_and_drop_server_keys(
    metadata: Mapping[str, str] | None,
    after_claim: dict[str, str],
    after_release: dict[str, str],
) -> None:
    assert claimed(metadata, ME) == after_claim
    assert released(metadata) == after_release
    assert decide(claimed(metadata, ME), ME).verdict is Verdict.OWNED
    assert decide(released(claimed(metadata, ME)), "b/other").verdict is Verdict.ADOPT


def test_user_metadata() -> None:
    assert user_metadata(None) == {}
    assert user_metadata({**SERVER_KEYS, "k": "v"}) == {"k": "v"}


def test_refusal_names_the_owner() -> None:
    assert refusal("emails", "a/emails").startswith("queue emails belongs to TaskQueue a/emails")


# ---------------------------------------------------------------- in a real nats-server


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    client: Client = await nats.connect(nats_url)
    yield client.jetstream()
    await client.close()


def fresh_queue() -> str:
    return f"q{uuid.uuid4().hex[:10]}"


async def owner_keys(js: JetStreamContext, queue: str) -> list[str | None]:
    out = []
    for stream in (names.stream_name(queue), names.dead_letter_stream_name(queue)):
        info = await js.stream_info(stream)
        out.append((info.config.metadata or {}).get(OWNER_KEY))
    return out


@pytest.mark.integration
async def test_claim_is_written_kept_on_update_and_released(js: JetStreamContext) -> None:
    queue = fresh_queue()
    assert await queues.claim_metadata(js, queue) is None
    await queues.ensure_queue(js, queue, jetstream.QueueSettings(), "a/q")
    assert await owner_keys(js, queue) == ["a/q", "a/q"]
    assert decide(await queues.claim_metadata(js, queue), "a/q").verdict is Verdict.OWNED

    # A settings change rewrites the stream config: the claim stays.
    report = await queues.ensure_queue(js, queue, jetstream.QueueSettings(max_age_seconds=3600))
    assert any("max_age" in u for u in report.updated), report
    assert await owner_keys(js, queue) == ["a/q", "a/q"]

    # Only the owner's claim is released, and nothing else changes.
    await js.publish(names.task_subject(queue), b"{}")
    assert await queues.release_queue(js, queue, "b/q") == []
    released_streams = await queues.release_queue(js, queue, "a/q")
    assert released_streams == [names.stream_name(queue), names.dead_letter_stream_name(queue)]
    assert await owner_keys(js, queue) == [None, None]
    assert (await queues.queue_stats(js, queue)).pending == 1
    assert (await js.stream_info(names.stream_name(queue))).config.max_age == 3600


@pytest.mark.integration
async def test_an_unclaimed_stream_is_adopted_with_its_tasks_and_metadata(
    js: JetStreamContext,
) -> None:
    queue = fresh_queue()
    settings = jetstream.QueueSettings()
    # Declared the way the SDK does on a laptop, with a key of the user's own.
    config = jetstream.work_stream_config(queue, settings)
    await js.add_stream(StreamConfig(**config, metadata={"team": "mail"}))
    await js.publish(names.task_subject(queue), b"{}")
    metadata = await queues.claim_metadata(js, queue)
    assert decide(metadata, "a/q").verdict is Verdict.ADOPT

    report = await queues.ensure_queue(js, queue, settings, "a/q")
    assert f"stream {names.stream_name(queue)} (owner)" in report.updated
    info = await js.stream_info(names.stream_name(queue))
    assert info.config.metadata is not None
    assert info.config.metadata[OWNER_KEY] == "a/q"
    assert info.config.metadata["team"] == "mail"
    assert info.state.messages == 1
    # Reconciling again changes nothing.
    again = await queues.ensure_queue(js, queue, settings, "a/q")
    assert (again.created, again.updated, again.problems) == ([], [], [])


@pytest.mark.integration
async def test_the_claim_is_written_even_when_a_setting_is_refused(js: JetStreamContext) -> None:
    queue = fresh_queue()
    await queues.ensure_queue(js, queue, jetstream.QueueSettings())  # unclaimed, as the SDK
    # JetStream refuses a max age below the duplicate window (120 s).
    refused = jetstream.QueueSettings(max_age_seconds=60)
    report = await queues.ensure_queue(js, queue, refused, "a/q")
    assert any("max_age" in p for p in report.problems), report
    assert f"stream {names.stream_name(queue)} (owner)" in report.updated
    assert await owner_keys(js, queue) == ["a/q", "a/q"]
