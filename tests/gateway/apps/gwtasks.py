"""Tasks the gateway tests' workers run (names as docs/protocol.md and docs/gateway.md
use them)."""

from __future__ import annotations

import asyncio
from typing import Any

from celeriac.app import Celeriac

app = Celeriac("gateway-tests")


@app.task(name="tasks.add")
def add(a: int, b: int) -> int:
    return a + b


@app.task(name="tasks.fail", max_retries=0)
def fail() -> None:
    raise ValueError("broken on purpose")


@app.task(name="tasks.sleep")
async def sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@app.task(name="hooks.receive")
def receive(payload: Any, headers: dict[str, str]) -> dict[str, Any]:
    return {"payload": payload, "headers": headers}


# The name docs/protocol.md's examples use.
@app.task(name="proj.tasks.add")
def proj_add(a: int, b: int) -> int:
    return a + b
