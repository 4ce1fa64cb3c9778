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


async def test_linger_waits_for_gather_and_returns_early_on_release() -> None:
    slots = SlotPool(4)
    assert await slots.reserve(3) == 3  # one free
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiter = asyncio.create_task(slots.reserve(4, gather=3, linger=30))
    await asyncio.sleep(0.02)
    assert not waiter.done()  # one free is fewer than gather: it lingers
    slots.release(1)
    await asyncio.sleep(0.02)
    assert not waiter.done()  # two free: still fewer than three
    slots.release(1)
    assert await asyncio.wait_for(waiter, 5) == 3
    assert loop.time() - started < 10  # well before the linger ran out
    assert slots.free == 0


async def test_linger_returns_what_is_free_when_it_runs_out() -> None:
    slots = SlotPool(4)
    await slots.reserve(3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    taken = await asyncio.wait_for(slots.reserve(4, gather=3, linger=0.1), 5)
    assert taken == 1
    assert loop.time() - started >= 0.09
    assert slots.free == 0


async def test_linger_not_needed_when_gather_is_already_free() -> None:
    slots = SlotPool(8)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await slots.reserve(5, gather=4, linger=30) == 5
    assert loop.time() - started < 5


async def test_linger_still_takes_at_most_most() -> None:
    slots = SlotPool(6)
    await slots.reserve(5)
    waiter = asyncio.create_task(slots.reserve(2, gather=4, linger=30))
    await asyncio.sleep(0.02)
    slots.release(4)
    assert await asyncio.wait_for(waiter, 5) == 2
    assert slots.free == 3


async def test_zero_linger_takes_what_is_free_at_once() -> None:
    slots = SlotPool(4)
    await slots.reserve(3)
    assert await asyncio.wait_for(slots.reserve(4, gather=3, linger=0), 0.5) == 1
    # And with nothing free it still waits for the first release.
    waiter = asyncio.create_task(slots.reserve(4, gather=3, linger=0))
    await asyncio.sleep(0.02)
    assert not waiter.done()
    slots.release(2)
    assert await asyncio.wait_for(waiter, 5) == 2
