"""Heartbeats: one loop sends ``in_progress`` for every held message at its own interval."""

from __future__ import annotations

import asyncio
import itertools

from celeriac.worker_runtime.heartbeats import Heartbeats
from tests.support import await_until


class FakeHeld:
    """A held message that records the loop time of each beat."""

    def __init__(self, interval: float) -> None:
        self.heartbeat_interval = interval
        self.held_since = asyncio.get_running_loop().time()
        self.next_beat = self.held_since + interval
        self.settled = False
        self.beats: list[float] = []

    async def beat(self) -> None:
        self.beats.append(asyncio.get_running_loop().time())


def gaps(beats: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(beats)]


async def test_beats_come_every_interval_never_early() -> None:
    held: dict[str, FakeHeld] = {"a": FakeHeld(0.05)}
    beats = Heartbeats(held.values)
    beats.note_interval(0.05)
    beats.start()
    try:
        one = held["a"]
        await await_until(lambda: len(one.beats) >= 5, timeout=5, what="five beats")
        assert one.beats[0] - one.held_since >= 0.05 - 0.005  # none before one interval
        assert all(gap >= 0.05 - 0.005 for gap in gaps(one.beats))
    finally:
        await beats.stop()


async def test_settled_or_gone_messages_get_no_more_beats() -> None:
    held = {"kept": FakeHeld(0.05), "settled": FakeHeld(0.05), "gone": FakeHeld(0.05)}
    beats = Heartbeats(held.values)
    beats.note_interval(0.05)
    beats.start()
    try:
        await await_until(
            lambda: all(h.beats for h in held.values()), timeout=5, what="beats of all"
        )
        settled, gone = held["settled"], held.pop("gone")
        settled.settled = True
        counts = len(settled.beats), len(gone.beats)
        kept = held["kept"]
        kept_at = len(kept.beats)
        await await_until(lambda: len(kept.beats) >= kept_at + 4, timeout=5, what="more beats")
        assert (len(settled.beats), len(gone.beats)) == counts
    finally:
        await beats.stop()


async def test_the_tick_follows_the_shortest_interval() -> None:
    held = {"slow": FakeHeld(0.2), "fast": FakeHeld(0.05)}
    beats = Heartbeats(held.values)
    beats.note_interval(0.2)
    beats.note_interval(0.05)
    beats.note_interval(0.5)  # a longer one does not slow the loop down again
    beats.start()
    try:
        slow, fast = held["slow"], held["fast"]
        await await_until(lambda: len(slow.beats) >= 3, timeout=10, what="three slow beats")
        assert len(fast.beats) >= 2 * len(slow.beats)  # about four per slow one
        assert all(gap >= 0.2 - 0.01 for gap in gaps(slow.beats))
    finally:
        await beats.stop()


async def test_stop_cancels_cleanly_and_twice() -> None:
    held = {"a": FakeHeld(0.05)}
    beats = Heartbeats(held.values)
    await beats.stop()  # before start
    beats.note_interval(0.05)
    beats.start()
    beats.start()  # a second start keeps the one loop
    await await_until(lambda: len(held["a"].beats) >= 1, timeout=5, what="a beat")
    async with asyncio.timeout(5):
        await beats.stop()
    count = len(held["a"].beats)
    await asyncio.sleep(0.15)  # three intervals: nothing more may come
    assert len(held["a"].beats) == count
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "celeriac-heartbeats"]
    await beats.stop()


async def test_slow_beat_delays_others_but_does_not_stall_them() -> None:
    class SlowHeld(FakeHeld):
        async def beat(self) -> None:
            await asyncio.sleep(0.1)
            await super().beat()

    held: dict[str, FakeHeld] = {"slow": SlowHeld(0.05), "quick": FakeHeld(0.05)}
    beats = Heartbeats(held.values)
    beats.note_interval(0.05)
    beats.start()
    try:
        await await_until(lambda: len(held["quick"].beats) >= 3, timeout=10, what="quick beats")
        assert held["slow"].beats
    finally:
        await beats.stop()
