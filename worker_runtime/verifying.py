"""A worker holding signing keys checks each delivery's ``Celeriac-Signature`` first.

Pure: the delivery's queue, headers and body in, a ``Rejection`` (dead-lettered as
``unsigned`` or ``bad_signature``) or None out. A task and a periodic task's fire are
checked alike, a fire under ``periodic.<name>`` (see ``celeriac.protocol.signing``).
Nothing in a refused message is acted on: it is not run, and no result is written
under its id, which is only what the unverified sender claims.
"""

from __future__ import annotations

from collections.abc import Mapping

from celeriac.protocol.envelope import DeadLetterReason, TaskMessage
from celeriac.protocol.periodic import HDR_PERIODIC
from celeriac.protocol.signing import HDR_SIGNATURE, Problem, SigningKeys, delivered_id
from celeriac.worker_runtime.decoding import Rejection, decode_task

_REASONS = {
    Problem.UNSIGNED: DeadLetterReason.UNSIGNED,
    Problem.BAD_SIGNATURE: DeadLetterReason.BAD_SIGNATURE,
}


def verify(
    keys: SigningKeys, queue: str, headers: Mapping[str, str] | None, data: bytes | None
) -> Rejection | None:
    """None when the delivery is signed with one of ``keys``, else why it is refused."""
    headers = headers or {}
    body = data or b""
    message_id = delivered_id(headers, queue, HDR_PERIODIC)
    refusal = keys.verify(queue, message_id, body, headers.get(HDR_SIGNATURE))
    if refusal is None:
        return None
    # The claimed id and name, for the letter and the log line (only when readable).
    decoded = decode_task(body) if HDR_PERIODIC not in headers else None
    task_id = decoded.id if isinstance(decoded, TaskMessage) else None
    task = decoded.task if isinstance(decoded, TaskMessage) else None
    return Rejection(_REASONS[refusal.problem], refusal.error, task_id, task)
