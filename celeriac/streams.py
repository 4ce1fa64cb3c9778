"""Which queues exist: found by listing JetStream's streams, nothing remembered."""

from __future__ import annotations

from nats.js import JetStreamContext

from celeriac.protocol import names


async def _queues(js: JetStreamContext, prefix: str) -> list[str]:
    found: list[str] = []
    offset = 0
    while True:
        streams = await js.streams_info(offset)
        if not streams:
            return sorted(found)
        for stream in streams:
            name = stream.config.name or ""
            queue = name[len(prefix) :]
            # Other streams with the prefix (CELERIAC_DLQ_..., CELERIAC_EVENTS) are
            # not valid queue names once it is cut off.
            if name.startswith(prefix) and names.is_valid_queue_name(queue):
                found.append(queue)
        offset += len(streams)


async def work_queues(js: JetStreamContext) -> list[str]:
    """The queues that have a work stream (``CELERIAC_<queue>``), sorted."""
    return await _queues(js, names.STREAM_PREFIX)


async def dead_letter_queues(js: JetStreamContext) -> list[str]:
    """The queues that have a dead-letter stream (``CELERIAC_DLQ_<queue>``), sorted."""
    return await _queues(js, names.DEAD_LETTER_STREAM_PREFIX)
