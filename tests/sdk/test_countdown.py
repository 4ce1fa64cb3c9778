"""countdown/eta through JetStream message schedules, checked with a raw consumer."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, StreamConfig

from celeriac.app import Celeriac
from celeriac.exceptions import ScheduleNotSupported
from celeriac.protocol import jetstream, names
from tests.support import await_until

pytestmark = pytest.mark.integration


async def pending(nc: Client, queue: str) -> int:
    info = await nc.jetstream().consumer_info(names.stream_name(queue), names.CONSUMER_NAME)
    return int(info.num_pending)


@pytest.mark.parametrize("use_eta", [False, True])
async def test_delayed_task_appears_when_due(
    aapp: Celeriac, queue: str, raw_nc: Client, use_eta: bool
) -> None:
    delay = 2.0
    start = time.monotonic()
    if use_eta:
        await aapp.asend_task("t.x", (1,), eta=datetime.now(UTC) + timedelta(seconds=delay))
    else:
        await aapp.asend_task("t.x", (1,), countdown=delay)
    due = start + delay
    assert await pending(raw_nc, queue) == 0
    await await_until(lambda: pending(raw_nc, queue), timeout=delay + 5, what="the due task")
    appeared = time.monotonic()
    assert appeared >= due - 0.1, "ran early"
    assert appeared <= due + 1.0, f"appeared {appeared - due:.2f} s after due"


async def test_countdown_on_a_stream_without_schedules(
    nats_url: str, queue: str, raw_nc: Client
) -> None:
    js = raw_nc.jetstream()
    config = jetstream.work_stream_config(queue, jetstream.QueueSettings())
    config["allow_msg_schedules"] = False
    await js.add_stream(StreamConfig(**config))
    await js.add_consumer(
        names.stream_name(queue),
        ConsumerConfig(**jetstream.consumer_config(queue, jetstream.QueueSettings())),
    )
    app = Celeriac("old", nats_url, default_queue=queue)
    try:
        with pytest.raises(ScheduleNotSupported, match=r"2\.12"):
            await app.asend_task("t.x", countdown=1)
        await app.asend_task("t.x")  # immediate tasks still work
        await await_until(lambda: pending(raw_nc, queue), timeout=5, what="the immediate task")
    finally:
        await app.aclose()


async def test_delayed_task_dedup(aapp: Celeriac, queue: str, raw_nc: Client) -> None:
    await aapp.asend_task("t.x", task_id="delayed-once", countdown=0.5)
    await aapp.asend_task("t.x", task_id="delayed-once", countdown=0.5)
    await await_until(lambda: pending(raw_nc, queue), timeout=5, what="the due task")
    info = await raw_nc.jetstream().stream_info(names.stream_name(queue))
    assert info.state.messages == 1
