"""The raw ceiling's worker: batched fetch + ack with plain nats-py, no task framework.

``python -m bench.rawworker NATS_URL STREAM``. A message carrying a
``Bench-Reply`` header is a latency probe: the worker answers it with the time it
picked the message up.
"""

from __future__ import annotations

import asyncio
import sys
import time

import nats

from celeriac.protocol import names

BATCH = 256
REPLY_HEADER = "Bench-Reply"


async def consume(url: str, stream: str) -> None:
    """Fetch, (answer probes,) ack; forever."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind(durable=names.CONSUMER_NAME, stream=stream)
    while True:
        try:
            msgs = await sub.fetch(BATCH, timeout=1.0)
        except TimeoutError:
            continue
        for msg in msgs:
            reply = msg.headers.get(REPLY_HEADER) if msg.headers else None
            if reply:
                await nc.publish(reply, repr(time.time()).encode())
            await msg.ack()


def main() -> None:
    """Entry point."""
    url, stream = sys.argv[1], sys.argv[2]
    asyncio.run(consume(url, stream))


if __name__ == "__main__":
    main()
