"""TaskQueue reconciliation against a real nats-server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from celeriac.operator import queues
from celeriac.operator.connections import NatsConnections
from celeriac.protocol import jetstream, names

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


@pytest.fixture
def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()


def fresh_queue() -> str:
    return f"q{uuid.uuid4().hex[:10]}"


async def test_ensure_creates_then_is_idempotent(js: JetStreamContext) -> None:
    queue = fresh_queue()
    settings = jetstream.QueueSettings()
    first = await queues.ensure_queue(js, queue, settings)
    assert not first.problems
    assert {"stream", "consumer"} <= {c.split()[0] for c in first.created}
    for bucket in (names.RESULTS_BUCKET, names.REVOKED_BUCKET, names.CHORDS_BUCKET):
        await js.key_value(bucket)
    stream = await js.stream_info(names.stream_name(queue))
    assert stream.config.subjects == [names.task_subject(queue), names.schedule_subjects(queue)]
    await js.stream_info(names.dead_letter_stream_name(queue))
    await js.consumer_info(names.stream_name(queue), names.CONSUMER_NAME)
    again = await queues.ensure_queue(js, queue, settings)
    assert (again.created, again.updated, again.problems) == ([], [], [])


async def test_changed_settings_update_in_place(js: JetStreamContext) -> None:
    queue = fresh_queue()
    await queues.ensure_queue(js, queue, jetstream.QueueSettings())
    await js.publish(names.task_subject(queue), b"{}")
    changed = jetstream.QueueSettings(
        max_age_seconds=3600, ack_wait_seconds=90, max_deliveries=5, backoff_seconds=(1.0, 5.0)
    )
    report = await queues.ensure_queue(js, queue, changed)
    assert not report.problems
    assert any("max_age" in u for u in report.updated)
    assert any("ack_wait" in u for u in report.updated)
    consumer = await js.consumer_info(names.stream_name(queue), names.CONSUMER_NAME)
    assert consumer.config.max_deliver == 5
    assert consumer.config.backoff == [1.0, 5.0]
    # The queued task survived the update.
    assert (await queues.queue_stats(js, queue)).pending == 1


async def test_what_jetstream_cannot_change_is_reported(js: JetStreamContext) -> None:
    queue = fresh_queue()
    wanted = jetstream.work_stream_config(queue, jetstream.QueueSettings())
    await js.add_stream(StreamConfig(**{**wanted, "storage": StorageType.MEMORY}))
    report = await queues.ensure_queue(js, queue, jetstream.QueueSettings())
    assert len(report.problems) == 1
    assert "storage" in report.problems[0] and "memory" in report.problems[0]
    # Everything else was still made right.
    await js.consumer_info(names.stream_name(queue), names.CONSUMER_NAME)


async def test_stats_and_delete(js: JetStreamContext) -> None:
    queue = fresh_queue()
    await queues.ensure_queue(js, queue, jetstream.QueueSettings())
    for _ in range(3):
        await js.publish(names.task_subject(queue), b"{}")
    await js.publish(names.dead_letter_subject(queue), b"{}")
    sub = await js.pull_subscribe_bind(names.CONSUMER_NAME, names.stream_name(queue))
    msgs = await sub.fetch(1, timeout=5)
    stats = await queues.queue_stats(js, queue)
    assert (stats.pending, stats.ack_pending, stats.dead_letters) == (2, 1, 1)
    backlog_only = await queues.queue_stats(js, queue, dead_letters=False)
    assert (backlog_only.pending, backlog_only.dead_letters) == (2, 0)
    await msgs[0].ack_sync()
    stats = await queues.queue_stats(js, queue)
    assert (stats.pending, stats.ack_pending, stats.completed) == (2, 0, 1)
    deleted = await queues.delete_queue(js, queue)
    assert deleted == [names.stream_name(queue), names.dead_letter_stream_name(queue)]
    with pytest.raises(NotFoundError):
        await queues.queue_stats(js, queue)
    assert await queues.delete_queue(js, queue) == []


async def test_connections_are_shared_per_url(nats_url: str) -> None:
    connections = NatsConnections(nats_url)
    try:
        a = await connections.jetstream()
        b = await connections.jetstream(nats_url)
        assert a._nc is b._nc
    finally:
        await connections.close()


async def test_unreachable_nats_fails_fast() -> None:
    connections = NatsConnections("nats://127.0.0.1:1")
    with pytest.raises((TimeoutError, OSError, nats.errors.Error)):
        await connections.jetstream(wait=1.0)
    await connections.close()


async def test_bucket_replicas_a_single_server_cannot_hold_are_a_problem_not_a_crash(
    js: JetStreamContext,
) -> None:
    await queues.ensure_buckets(js, queues.QueueReport())  # as any earlier test left them
    report = queues.QueueReport()
    await queues.ensure_buckets(js, report, replicas=3)
    buckets = [config["bucket"] for config in jetstream.shared_bucket_configs()]
    assert len(report.problems) == len(buckets), report
    assert all("JetStream refused 3 replicas" in p for p in report.problems)
    for bucket in buckets:
        info = await js.stream_info(f"KV_{bucket}")
        assert info.config.num_replicas == 1  # unchanged, still serving
    same = queues.QueueReport()
    await queues.ensure_buckets(js, same, replicas=1)
    assert not (same.created or same.updated or same.problems)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nats://a:4222", ["nats://a:4222"]),
        ("nats://a:1,nats://b:2", ["nats://a:1", "nats://b:2"]),
        (" nats://a:1 , nats://b:2 ,", ["nats://a:1", "nats://b:2"]),
    ],
)
def test_a_seed_list_becomes_a_server_list(url: str, expected: list[str]) -> None:
    assert names.servers(url) == expected
