"""The slot pool that sizes pull requests: reservations never exceed free slots."""

from __future__ import annotations

import asyncio

import pytest

from celeriac.worker_runtime.slots import SlotPool


async def test_reserve_takes_what_is_free_up_to_the_share() -> None:
    slots = SlotPool(5)
    assert await slots.reserve(3) == 3
    assert await slots.reserve(10) == 2
    assert slots.free == 0 and slots.busy == 5


async def test_reserve_waits_for_a_release() -> None:
    slots = SlotPool(1)
    assert await slots.reserve(1) == 1
    waiter = asyncio.create_task(slots.reserve(4))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    slots.release(1)
    assert await asyncio.wait_for(waiter, 1) == 1


async def test_release_never_exceeds_capacity_and_idle_wait() -> None:
    slots = SlotPool(2)
    await slots.reserve(2)
    idle = asyncio.create_task(slots.wait_idle())
    slots.release(1)
    await asyncio.sleep(0.01)
    assert not idle.done()
    slots.release(5)
    await asyncio.wait_for(idle, 1)
    assert slots.free == 2


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SlotPool(0)
