"""Helpers for worker tests: worker subprocess handles, polling, reading dead letters."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from celeriac.broker import Broker
from celeriac.devenv.processes import ManagedProcess, wait_until
from celeriac.protocol import names
from celeriac.protocol.envelope import DeadLetter

APPS = Path(__file__).parent / "apps"
T = TypeVar("T")


@dataclass
class WorkerProc:
    """A worker subprocess and its health port."""

    process: ManagedProcess
    health_port: int

    def get(self, path: str) -> tuple[int, str]:
        """GET a health endpoint: (status, body)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}{path}", timeout=3
            ) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def wait_ready(self, timeout: float = 20.0) -> WorkerProc:
        wait_until(self.ready, timeout=timeout, what="worker /readyz", alive=self.process)
        return self

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.process.pid, sig)

    def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.process.popen.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker still running:\n{self.process.log_tail()}")
            time.sleep(0.05)
        return int(self.process.popen.returncode)

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, within: float, what: str, interval: float = 0.05
) -> T:
    """Poll the async ``check`` until it returns something truthy."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            value = await check()
            if value:
                return value
            last = value
        except Exception as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


async def dead_letters(broker: Broker, queue: str) -> list[DeadLetter]:
    """Every dead letter stored for ``queue``."""
    stream = names.dead_letter_stream_name(queue)
    info = await broker.js.stream_info(stream)
    letters = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await broker.js.get_msg(stream, seq)
        letters.append(DeadLetter.model_validate_json(msg.data or b""))
    return letters


async def wait_dead_letters(
    broker: Broker, queue: str, count: int, within: float = 15.0
) -> list[DeadLetter]:
    """Wait until ``queue`` has ``count`` dead letters; return them."""

    async def enough() -> list[DeadLetter] | None:
        letters = await dead_letters(broker, queue)
        return letters if len(letters) >= count else None

    return await eventually(enough, within=within, what=f"{count} dead letter(s) on {queue}")
