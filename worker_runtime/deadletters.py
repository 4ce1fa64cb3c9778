"""Dead letters: the original message and why it could not be run, always storable.

The letter goes to the queue's dead-letter stream and is acknowledged by JetStream
before the worker terminates the original, so a crash in between redelivers the
original rather than losing it. A letter must fit in one NATS message whatever the
original was: its body is kept as text when it is UTF-8 (base64 otherwise), and when
the whole letter would be too large, a prefix of the body is kept together with the
body's size and SHA-256, so the original can still be identified and matched.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import TYPE_CHECKING

from celeriac.protocol import names
from celeriac.protocol.envelope import DeadLetter

if TYPE_CHECKING:
    from celeriac.broker import Broker

PUBLISH_TIMEOUT = 10.0
# Room kept for the headers and the protocol line around the letter.
HEADROOM = 4096
_MAX_HEADERS = 64
_MAX_HEADER_CHARS = 1024


def original_body(body: bytes) -> tuple[str, str]:
    """(text, encoding) of an original body: as is when UTF-8, else base64."""
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"


def original_headers(headers: dict[str, str] | None) -> dict[str, str]:
    """The original's headers, bounded in number and length."""
    items = list((headers or {}).items())[:_MAX_HEADERS]
    return {str(k)[:_MAX_HEADER_CHARS]: str(v)[:_MAX_HEADER_CHARS] for k, v in items}


def fit(letter: DeadLetter, body: bytes, limit: int) -> DeadLetter:
    """``letter`` carrying ``body`` as its original, serialized in at most ``limit`` bytes."""
    text, encoding = original_body(body)
    full = letter.model_copy(
        update={"original": text, "original_encoding": encoding, "original_size": len(body)}
    )
    if len(full.dumps()) <= limit:
        return full
    bare = full.model_copy(
        update={
            "original": "",
            "original_truncated": True,
            "original_sha256": hashlib.sha256(body).hexdigest(),
        }
    )
    room = limit - len(bare.dumps())
    cut = bare.model_copy(update={"original": _prefix(text, room)})
    while len(cut.dumps()) > limit and cut.original:  # escapes counted differently: shrink
        cut = cut.model_copy(update={"original": cut.original[: len(cut.original) * 9 // 10]})
    return cut


def _encoded(text: str) -> int:
    """Bytes ``text`` takes inside a JSON document (escapes included, quotes not)."""
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def _prefix(text: str, room: int) -> str:
    """The longest prefix of ``text`` that takes at most ``room`` bytes in JSON."""
    low, high = 0, min(len(text), max(room, 0))
    while low < high:
        mid = (low + high + 1) // 2
        if _encoded(text[:mid]) <= room:
            low = mid
        else:
            high = mid - 1
    return text[:low]


def letter_id(letter: DeadLetter) -> str | None:
    """The letter's ``Nats-Msg-Id``: the same each time one stored message is
    dead-lettered for one reason, so the dead-letter stream drops a repeat (a worker
    that settles the message again after an error past the letter) inside its
    duplicate window. None without a stream sequence to derive it from."""
    if letter.stream_sequence is None:
        return None
    task_id = letter.task_id or "-"
    return f"dead.{letter.queue}.{letter.stream_sequence}.{letter.reason.value}.{task_id}"


async def publish_dead_letter(broker: Broker, letter: DeadLetter) -> None:
    """Store ``letter`` on its queue's dead-letter stream."""
    await broker.ensure_queue(letter.queue)
    headers = {names.HDR_REASON: letter.reason.value, names.HDR_PROTOCOL: "1"}
    if letter.task:
        headers[names.HDR_TASK] = letter.task
    if (msg_id := letter_id(letter)) is not None:
        headers[names.HDR_MSG_ID] = msg_id
    await broker.js.publish(
        names.dead_letter_subject(letter.queue),
        letter.dumps(),
        timeout=PUBLISH_TIMEOUT,
        headers=headers,
    )
