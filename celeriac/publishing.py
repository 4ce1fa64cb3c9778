"""How a task envelope becomes a JetStream publish: subject, headers and body.

Pure, so the wire shape (documented in docs/protocol.md) is tested without a server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from celeriac.protocol import names
from celeriac.protocol.envelope import TaskMessage
from celeriac.protocol.signing import HDR_SIGNATURE, SigningKeys


@dataclass(frozen=True)
class Publication:
    """One message to publish."""

    subject: str
    payload: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def scheduled(self) -> bool:
        """True when the server holds the message until its due time."""
        return names.HDR_SCHEDULE in self.headers


def rfc3339(moment: datetime) -> str:
    """``moment`` in UTC as RFC 3339 with a ``Z`` suffix (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def task_publication(
    message: TaskMessage, due: datetime | None = None, keys: SigningKeys | None = None
) -> Publication:
    """The publish that enqueues ``message``, now or (``due`` given) as a message schedule.

    The task id is the ``Nats-Msg-Id``, so the stream drops a resubmission inside its
    duplicate window. A delayed task is published on its own schedule subject with
    ``Nats-Schedule: @at <time>``; the server moves it to the task subject when due.
    """
    if due is not None:
        message = message.model_copy(update={"eta": due})
    headers = {
        names.HDR_MSG_ID: message.id,
        names.HDR_TASK: message.task,
        names.HDR_PROTOCOL: str(message.v),
    }
    payload = message.dumps()
    if keys is not None:  # under the task id: Nats-Msg-Id, or a delayed task's last token
        headers[HDR_SIGNATURE] = keys.sign(message.queue, message.id, payload)
    subject = names.task_subject(message.queue)
    if due is not None:
        headers[names.HDR_SCHEDULE] = f"@at {rfc3339(due)}"
        headers[names.HDR_SCHEDULE_TARGET] = subject
        subject = names.schedule_subject(message.queue, message.id)
    return Publication(subject=subject, payload=payload, headers=headers)
