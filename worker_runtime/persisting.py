"""Writes the worker must not lose to a short NATS outage, and which errors are those.

Storing a result or a dead letter is retried through a server restart; an error
that is not about the connection (a refused or invalid write) will fail again the
same way, and the caller ends the message instead of trying again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.errors import (
    ConnectionClosedError,
    FlushTimeoutError,
    NoRespondersError,
    OutboundBufferLimitError,
    StaleConnectionError,
)
from nats.js.errors import NoStreamResponseError

log = logging.getLogger(__name__)

# Waits between attempts to store a result or dead letter while NATS is away.
PERSIST_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
# Errors of a connection that is down or slow: the same write may work later. Any
# other error storing or continuing an outcome will fail again the same way.
TRANSIENT = (
    TimeoutError,
    NoRespondersError,
    NoStreamResponseError,
    ConnectionClosedError,
    StaleConnectionError,
    OutboundBufferLimitError,
    FlushTimeoutError,
)


async def persist(write: Callable[[], Awaitable[None]], what: str) -> None:
    """Retry a write through a short NATS outage (a server restart) before giving up."""
    for delay in PERSIST_DELAYS:
        try:
            await write()
            return
        except (TimeoutError, NoRespondersError, NoStreamResponseError) as exc:
            log.warning("storing the %s failed (%r); trying again in %gs", what, exc, delay)
            await asyncio.sleep(delay)
    await write()
