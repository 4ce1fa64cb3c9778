"""Storing a dead letter: the original message and why it could not be run.

The letter goes to the queue's dead-letter stream and is acknowledged by JetStream
before the worker terminates the original, so a crash in between redelivers the
original rather than losing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from celeriac.protocol import names
from celeriac.protocol.envelope import DeadLetter

if TYPE_CHECKING:
    from celeriac.broker import Broker

PUBLISH_TIMEOUT = 10.0


async def publish_dead_letter(broker: Broker, letter: DeadLetter) -> None:
    """Store ``letter`` on its queue's dead-letter stream."""
    await broker.ensure_queue(letter.queue)
    headers = {names.HDR_REASON: letter.reason.value, names.HDR_PROTOCOL: "1"}
    if letter.task:
        headers[names.HDR_TASK] = letter.task
    await broker.js.publish(
        names.dead_letter_subject(letter.queue),
        letter.dumps(),
        timeout=PUBLISH_TIMEOUT,
        headers=headers,
    )
