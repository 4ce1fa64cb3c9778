"""The demo's live progress display: what a user wants to see while tasks run.

Pure pieces (a snapshot, the completion rate over a window, one formatted line)
are kept apart from the renderer, which redraws one line in place on a terminal
and prints plain periodic lines otherwise (logs, CI, pipes).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

BAR_WIDTH = 20


@dataclass(frozen=True)
class Snapshot:
    """One look at the queue and the pool; ``at`` is seconds since the journey started."""

    at: float
    backlog: int
    in_flight: int
    done: int
    total: int
    desired: int
    ready: int


def rate(history: Sequence[Snapshot], window: float = 3.0) -> float:
    """Tasks finished per second over the last ``window`` seconds of ``history``."""
    if len(history) < 2:
        return 0.0
    last = history[-1]
    first = next((s for s in history if s.at >= last.at - window), history[0])
    if first is last:
        first = history[-2]
    span = last.at - first.at
    return max(last.done - first.done, 0) / span if span > 0 else 0.0


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """A text progress bar, ``[#####.....]``."""
    filled = width if total <= 0 else min(width, done * width // total)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def format_line(snap: Snapshot, per_second: float) -> str:
    """The progress line, most important first (a narrow terminal cuts the end)."""
    return (
        f"{snap.at:6.1f}s done {snap.done:>{len(str(snap.total))}}/{snap.total} | "
        f"backlog {snap.backlog:>5} | replicas {snap.desired}/{snap.ready} desired/ready | "
        f"{per_second:4.0f} tasks/s | running {snap.in_flight:>3} {bar(snap.done, snap.total)}"
    )


class ProgressDisplay:
    """Shows snapshots: redrawn in place on a terminal (cut to its width), otherwise a
    line every ``every`` seconds and whenever the replica counts change."""

    def __init__(
        self,
        out: TextIO,
        *,
        tty: bool | None = None,
        every: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        width: Callable[[], int] = lambda: shutil.get_terminal_size().columns,
    ) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.every = every
        self.clock = clock
        self.width = width
        self.history: list[Snapshot] = []
        self._last_plain: float | None = None
        self._last_replicas: tuple[int, int] | None = None
        # The highest windowed completion rate shown so far.
        self.peak_rate = 0.0

    def update(self, snap: Snapshot) -> None:
        """Record ``snap`` and show it (on a pipe: periodically, or when replicas change)."""
        self.history.append(snap)
        per_second = rate(self.history)
        self.peak_rate = max(self.peak_rate, per_second)
        line = format_line(snap, per_second)
        if self.tty:
            # A line longer than the terminal wraps, and "\r" would redraw only its tail.
            self.out.write("\r" + line[: max(self.width() - 1, 20)] + "\x1b[K")
            self.out.flush()
            return
        now = self.clock()
        replicas = (snap.desired, snap.ready)
        due = self._last_plain is None or now - self._last_plain >= self.every
        if due or replicas != self._last_replicas:
            self.out.write(line + "\n")
            self.out.flush()
            self._last_plain = now
            self._last_replicas = replicas

    def finish(self) -> None:
        """End the in-place line so later output starts on a fresh one."""
        if self.tty and self.history:
            self.out.write("\n")
            self.out.flush()
