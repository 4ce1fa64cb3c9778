"""RevokedMirror: the worker's in-memory copy of the revoked ids, against a real server."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from celeriac_devenv.nats import NatsServer

from celeriac.broker import Broker
from celeriac.worker_runtime.revoked import RevokedMirror
from tests.support import await_until

pytestmark = pytest.mark.integration


def new_id() -> str:
    return uuid.uuid4().hex


@pytest.fixture
async def broker(private_nats: NatsServer) -> AsyncIterator[Broker]:
    """A broker on this test's own server (its revocation bucket is this test's alone)."""
    opened = await Broker.connect(private_nats.url, declare=True, result_ttl=60)
    yield opened
    if opened.nc.is_connected:
        await opened.close()
    else:  # the server is gone: nothing to drain
        await opened.pubacks.close()
        # nats-py flushes requests buffered while reconnecting into the dead socket
        # on close, and raises for it; the connection is closed all the same.
        with contextlib.suppress(ConnectionError):
            await opened.nc.close()
        assert opened.nc.is_closed


@pytest.fixture
async def mirror(broker: Broker) -> AsyncIterator[RevokedMirror]:
    """A mirror not started yet; stopped afterwards."""
    made = RevokedMirror(broker.nc, broker.revocations)
    yield made
    async with asyncio.timeout(5):
        await made.stop()


async def test_empty_bucket_loads_and_is_current(mirror: RevokedMirror) -> None:
    await mirror.start()
    assert mirror.current
    assert await mirror.reason(new_id()) is None


async def test_revoked_before_start_are_loaded(broker: Broker, mirror: RevokedMirror) -> None:
    ids = [new_id() for _ in range(1200)]  # more than one fetch batch
    await asyncio.gather(*(broker.revocations.revoke(i, f"why {i}") for i in ids))
    await broker.revocations.revoke(ids[0], "changed my mind")  # only the last value counts
    await mirror.start()
    assert mirror.current
    assert await mirror.reason(ids[0]) == "changed my mind"
    for task_id in ids[1:]:
        assert await mirror.reason(task_id) == f"why {task_id}"
    assert await mirror.reason(new_id()) is None
    assert mirror.current


async def test_revoked_after_start_is_seen_from_memory(
    broker: Broker, mirror: RevokedMirror
) -> None:
    await mirror.start()
    task_id = new_id()
    assert await mirror.reason(task_id) is None
    await broker.revocations.revoke(task_id, "too late")

    async def seen() -> bool:
        return await mirror.reason(task_id) == "too late" and mirror.current

    await await_until(seen, timeout=5, what="the revocation in the mirror")
    assert mirror.current


async def test_deleted_and_purged_keys_disappear(broker: Broker, mirror: RevokedMirror) -> None:
    before, after = new_id(), new_id()
    await broker.revocations.revoke(before, "x")
    await mirror.start()
    await broker.revocations.revoke(after, "y")

    async def both() -> bool:
        return await mirror.reason(after) == "y" and await mirror.reason(before) == "x"

    await await_until(both, timeout=5, what="both revocations")
    kv = await broker.revocations.kv()
    await kv.delete(before)
    await kv.purge(after)

    async def gone() -> bool:
        return await mirror.reason(before) is None and await mirror.reason(after) is None

    await await_until(gone, timeout=5, what="the deleted and purged ids to disappear")
    assert mirror.current


async def test_deleted_keys_are_not_loaded(broker: Broker, mirror: RevokedMirror) -> None:
    kept, deleted, purged = new_id(), new_id(), new_id()
    for task_id in (kept, deleted, purged):
        await broker.revocations.revoke(task_id, "r")
    kv = await broker.revocations.kv()
    await kv.delete(deleted)
    await kv.purge(purged)
    await mirror.start()
    assert mirror.current
    assert await mirror.reason(kept) == "r"
    assert await mirror.reason(deleted) is None
    assert await mirror.reason(purged) is None


async def test_restart_makes_it_stale_until_a_lookup_reloads(
    private_nats: NatsServer, broker: Broker, mirror: RevokedMirror
) -> None:
    old = new_id()
    await broker.revocations.revoke(old, "old")
    await mirror.start()
    assert mirror.current
    reconnects = broker.nc.stats["reconnects"]
    private_nats.restart()

    async def reconnected() -> bool:
        return broker.nc.is_connected and broker.nc.stats["reconnects"] > reconnects

    await await_until(reconnected, timeout=20, what="the client to reconnect")
    assert not mirror.current  # writes may have been missed while disconnected
    # Meanwhile lookups still answer, through the server.
    fresh = new_id()
    assert await await_until(lambda: mirror.reason(old), timeout=15, what="old") == "old"
    assert await mirror.reason(fresh) is None
    # A revocation written right after the restart is seen.
    await broker.revocations.revoke(fresh, "new")

    async def fresh_seen() -> bool:
        return await mirror.reason(fresh) == "new"

    await await_until(fresh_seen, timeout=10, what="the revocation made after the restart")

    # The lookups triggered a reload: the copy becomes current again.
    async def current_again() -> bool:
        await mirror.reason(new_id())
        return mirror.current

    await await_until(current_again, timeout=15, what="the mirror to be current again")
    assert await mirror.reason(old) == "old"
    assert await mirror.reason(fresh) == "new"


async def test_stop_is_prompt_and_idempotent(mirror: RevokedMirror) -> None:
    await mirror.start()
    async with asyncio.timeout(5):
        await mirror.stop()
        await mirror.stop()
    assert not mirror.current


async def test_stop_is_prompt_after_the_server_stopped(
    private_nats: NatsServer, broker: Broker, mirror: RevokedMirror
) -> None:
    await mirror.start()
    private_nats.stop()

    async def disconnected() -> bool:
        return not broker.nc.is_connected

    await await_until(disconnected, timeout=10, what="the client to notice")
    async with asyncio.timeout(5):
        await mirror.stop()
    assert not mirror.current


async def test_stop_is_prompt_while_a_reload_waits_on_a_dead_server(
    private_nats: NatsServer, broker: Broker, mirror: RevokedMirror
) -> None:
    await mirror.start()
    reconnects = broker.nc.stats["reconnects"]
    private_nats.restart()

    async def reconnected() -> bool:
        return broker.nc.is_connected and broker.nc.stats["reconnects"] > reconnects

    await await_until(reconnected, timeout=20, what="the client to reconnect")
    private_nats.stop()

    # Lookups now start a reload that cannot finish; stop must not wait for it.
    async def reloading() -> bool:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(0.2):
                await mirror.reason(new_id())
        loading = mirror._loading
        return loading is not None and not loading.done()

    await await_until(reloading, timeout=10, what="a reload to be under way")
    async with asyncio.timeout(5):
        await mirror.stop()
    assert mirror._loading is not None and mirror._loading.done()
