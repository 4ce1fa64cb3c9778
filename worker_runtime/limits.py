"""How many deliveries a queue's consumer allows, read from the server and cached.

A task failing on the last delivery JetStream will make must end then: a NAK would
leave the message in the stream, never delivered again.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from celeriac.protocol import names

if TYPE_CHECKING:
    from celeriac.broker import Broker

log = logging.getLogger(__name__)

# How long a consumer's maxDeliveries, read from the server, is trusted.
_TTL = 60.0


class DeliveryLimits:
    """The ``max_deliver`` of each queue's consumer (None: unlimited)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._known: dict[str, tuple[int | None, float]] = {}

    async def of(self, queue: str) -> int | None:
        """The consumer's maxDeliveries (None: unlimited), read at most once a minute."""
        known = self._known.get(queue)
        now = time.monotonic()
        if known is not None and now - known[1] < _TTL:
            return known[0]
        try:
            info = await self._broker.js.consumer_info(
                names.stream_name(queue), names.CONSUMER_NAME
            )
        except Exception as exc:  # unknown for now: assume unlimited, ask again next time
            log.debug("cannot read the consumer of %s: %r", queue, exc)
            return None
        limit = info.config.max_deliver
        value = limit if limit is not None and limit > 0 else None
        self._known[queue] = (value, now)
        return value
