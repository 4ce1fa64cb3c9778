"""Publishes no stream answered (503): on a cluster, the queue's stream between leaders.

Nothing was stored, so the SDK sends them again for a while instead of failing the
caller during an election; after ``LEADERLESS_PATIENCE`` it fails with a sentence
that names both causes. The first answers are made to fail at the publish edge; the
rest go to the real server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.errors import NoStreamResponseError

from celeriac import broker as broker_module
from celeriac.app import Celeriac
from celeriac.exceptions import PublishError
from celeriac.publishing import Publication

pytestmark = pytest.mark.integration


async def _stored(raw_nc: Client, queue: str) -> int:
    info = await raw_nc.jetstream().stream_info(f"CELERIAC_{queue}")
    return int(info.state.messages)


async def test_a_single_submit_waits_out_an_election(
    aapp: Celeriac, queue: str, raw_nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = await aapp.broker()
    await broker.ensure_queue(queue)
    real = broker.pubacks.publish
    answers = iter([NoStreamResponseError(), NoStreamResponseError()])

    async def publish(subject: str, payload: bytes, headers: Any = None) -> None:
        failure = next(answers, None)
        if failure is not None:
            raise failure
        await real(subject, payload, headers=headers)

    monkeypatch.setattr(broker.pubacks, "publish", publish)
    await aapp.asend_task("t.any", args=[1])
    assert next(answers, None) is None
    assert await _stored(raw_nc, queue) == 1


async def test_a_batch_sends_again_only_what_no_stream_answered(
    aapp: Celeriac, queue: str, raw_nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await (await aapp.broker()).ensure_queue(queue)
    real = broker_module.publish_pipelined
    sent: list[int] = []

    async def pipelined(
        nc: Client, pubs: Sequence[Publication], *, patience: float
    ) -> dict[int, BaseException]:
        sent.append(len(pubs))
        if len(sent) == 1:  # the first round: two of five find no stream, three are stored
            stored = await real(nc, [pubs[0], pubs[2], pubs[4]], patience=patience)
            assert not stored
            return {1: NoStreamResponseError(), 3: NoStreamResponseError()}
        return await real(nc, pubs, patience=patience)

    monkeypatch.setattr(broker_module, "publish_pipelined", pipelined)
    await aapp.asend_many([aapp.signature("t.any", args=[i]) for i in range(5)])
    assert sent == [5, 2]
    assert await _stored(raw_nc, queue) == 5


async def test_no_stream_for_too_long_fails_naming_both_causes(
    aapp: Celeriac, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = await aapp.broker()
    await broker.ensure_queue(queue)
    monkeypatch.setattr(broker_module, "LEADERLESS_PATIENCE", 0.3)

    async def publish(subject: str, payload: bytes, headers: Any = None) -> None:
        raise NoStreamResponseError()

    monkeypatch.setattr(broker.pubacks, "publish", publish)
    with pytest.raises(PublishError, match=r"no stream answered for 0.3 s .* no leader"):
        await aapp.asend_task("t.any")
