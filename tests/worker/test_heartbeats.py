"""Heartbeats: one loop sends ``in_progress`` for every held message at its own interval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from celeriac.worker_runtime.heartbeats import Heartbeats

_LOOP = "celeriac-heartbeats"


class FakeHeld:
    """A held message that records the loop time of each beat."""

    def __init__(self, interval: float) -> None:
        self.heartbeat_interval = interval
        self.beats: list[float] = []

    async def beat(self) -> None:
        self.beats.append(asyncio.get_running_loop().time())


async def until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


def loop_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == _LOOP and not t.done()]


async def test_beats_come_about_every_interval_not_before_the_first() -> None:
    beats = Heartbeats()
    held = FakeHeld(0.05)
    added = asyncio.get_running_loop().time()
    beats.add(held)
    assert len(beats) == 1
    try:
        await until(lambda: len(held.beats) >= 5, within=5, what="five beats")
        assert held.beats[0] - added >= 0.05 - 0.005  # none before one interval
        gaps = [b - a for a, b in zip(held.beats, held.beats[1:], strict=False)]
        assert all(gap >= 0.05 - 0.005 for gap in gaps)  # never faster than the interval
    finally:
        await beats.stop()


async def test_discard_stops_only_that_one() -> None:
    beats = Heartbeats()
    kept, dropped = FakeHeld(0.05), FakeHeld(0.05)
    beats.add(kept)
    beats.add(dropped)
    try:
        await until(lambda: len(dropped.beats) >= 2, within=5, what="beats of both")
        beats.discard(dropped)
        beats.discard(dropped)  # twice is harmless
        assert len(beats) == 1
        stopped_at = len(dropped.beats)
        kept_at = len(kept.beats)
        await until(lambda: len(kept.beats) >= kept_at + 4, within=5, what="more beats")
        assert len(dropped.beats) == stopped_at
    finally:
        await beats.stop()


async def test_mixed_intervals_are_both_honoured() -> None:
    beats = Heartbeats()
    slow, fast = FakeHeld(0.2), FakeHeld(0.05)
    beats.add(slow)  # the slower one first: the loop must not oversleep the fast one
    beats.add(fast)
    try:
        await until(lambda: len(slow.beats) >= 3, within=10, what="three slow beats")
        # Roughly four fast beats per slow one; demand well under that.
        assert len(fast.beats) >= 2 * len(slow.beats)
        slow_gaps = [b - a for a, b in zip(slow.beats, slow.beats[1:], strict=False)]
        assert all(gap >= 0.2 - 0.01 for gap in slow_gaps)
    finally:
        await beats.stop()


async def test_loop_ends_when_nothing_is_held_and_restarts_on_add() -> None:
    beats = Heartbeats()
    first = FakeHeld(0.05)
    beats.add(first)
    assert len(loop_tasks()) == 1
    await until(lambda: len(first.beats) >= 1, within=5, what="a beat")
    beats.discard(first)
    await until(lambda: not loop_tasks(), within=5, what="the loop to end")
    second = FakeHeld(0.05)
    beats.add(second)
    assert len(loop_tasks()) == 1
    try:
        await until(lambda: len(second.beats) >= 2, within=5, what="beats after restart")
    finally:
        await beats.stop()


async def test_stop_cancels_cleanly() -> None:
    beats = Heartbeats()
    await beats.stop()  # before anything was added
    held = FakeHeld(0.05)
    beats.add(held)
    await until(lambda: len(held.beats) >= 1, within=5, what="a beat")
    async with asyncio.timeout(5):
        await beats.stop()
    assert not loop_tasks()
    assert len(beats) == 0
    count = len(held.beats)
    await asyncio.sleep(0.15)  # three intervals: nothing more may come
    assert len(held.beats) == count
    await beats.stop()  # twice is harmless


async def test_slow_beat_does_not_stall_others_forever() -> None:
    """A beat that takes a while delays the others but they still get theirs."""

    class SlowHeld(FakeHeld):
        async def beat(self) -> None:
            await asyncio.sleep(0.1)
            await super().beat()

    beats = Heartbeats()
    slow, quick = SlowHeld(0.05), FakeHeld(0.05)
    beats.add(slow)
    beats.add(quick)
    try:
        await until(lambda: len(quick.beats) >= 3, within=10, what="quick beats")
        assert slow.beats
    finally:
        await beats.stop()
