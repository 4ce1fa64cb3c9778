"""Tasks the operator's autoscaling test runs in real worker pods."""

from __future__ import annotations

import asyncio

from celeriac.app import Celeriac

app = Celeriac("operator-e2e")


@app.task(name="opscale.square")
async def square(x: int) -> int:
    # Long enough that the backlog lasts a few polls, short enough to drain quickly.
    await asyncio.sleep(0.02)
    return x * x
