"""JetStream streams held in memory, with the server-side rules Celeriac relies on.

A stream keeps its messages by sequence and applies, on each store, what a
nats-server would: a repeated ``Nats-Msg-Id`` inside the duplicate window is
dropped, ``Nats-Expected-Last-Subject-Sequence`` is checked (KV create and update
rest on it), only the last messages of a subject are kept when the stream says so
(KV buckets), and a ``Nats-Schedule: @at <time>`` message is held until it is due.
A work-queue stream hands its messages to its consumer one delivery at a time,
counting deliveries and honouring the consumer's ``max_deliver``, and forgets a
message once it is acknowledged or terminated.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.js.api import ConsumerConfig, ConsumerInfo, StreamConfig, StreamInfo, StreamState
from nats.js.errors import APIError, BadRequestError, NotFoundError

from celeriac.protocol import names

HDR_EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
# Added by the server to a message it moves out of a schedule: the schedule's subject.
HDR_SCHEDULER = "Nats-Scheduler"
# JetStream's error codes for these refusals, as a nats-server sends them.
ERR_WRONG_LAST_SEQUENCE = 10071
ERR_SCHEDULES_DISABLED = 10188
# A stream without a duplicate window of its own keeps ids this long (the server default).
DEFAULT_DUPLICATE_WINDOW = 120.0


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` stands for one token, a final ``>`` for one or more."""
    wanted, given = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(given) > index
        if index >= len(given) or (token != "*" and token != given[index]):
            return False
    return len(given) == len(wanted)


def parse_at(schedule: str) -> datetime | None:
    """The due time of an ``@at <RFC 3339>`` schedule; None for a recurring schedule."""
    text = schedule.strip()
    if not text.startswith("@at "):
        return None
    moment = datetime.fromisoformat(text[4:].strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class StoredMessage:
    """One message in a stream, and its delivery state on the stream's consumer."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
    time: datetime
    # A held message schedule: when the server moves it to its target subject.
    due: datetime | None = None
    deliveries: int = 0
    in_flight: bool = False
    # Not delivered again before this moment (``time.monotonic()``): a NAK's delay.
    available_at: float = 0.0


@dataclass(frozen=True)
class Stored:
    """Where a publish landed: the stream and sequence (a duplicate keeps the first's)."""

    stream: str
    seq: int
    duplicate: bool = False

    def ack_json(self) -> bytes:
        """The body of JetStream's acknowledgement."""
        extra = ',"duplicate":true' if self.duplicate else ""
        return f'{{"stream":"{self.stream}","seq":{self.seq}{extra}}}'.encode()


def _is_work_queue(config: StreamConfig) -> bool:
    return str(getattr(config.retention, "value", config.retention)) == "workqueue"


@dataclass
class MemoryStream:
    """A stream: its configuration, messages, consumers and recent message ids."""

    config: StreamConfig
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    consumers: dict[str, ConsumerConfig] = field(default_factory=dict)
    last_seq: int = 0
    _ids: dict[str, tuple[int, float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The stream's name."""
        return str(self.config.name)

    @property
    def work_queue(self) -> bool:
        """True for a work-queue stream: a message leaves it once acknowledged."""
        return _is_work_queue(self.config)

    def captures(self, subject: str) -> bool:
        """True when a publish on ``subject`` is stored here."""
        return any(subject_matches(p, subject) for p in self.config.subjects or ())

    def store(self, subject: str, data: bytes, headers: dict[str, str]) -> Stored:
        """Store a publish as the server would, or raise the ``APIError`` it would answer."""
        now = time.monotonic()
        msg_id = headers.get(names.HDR_MSG_ID)
        if msg_id is not None:
            seen = self._ids.get(msg_id)
            if seen is not None and now - seen[1] < self._window():
                return Stored(self.name, seen[0], duplicate=True)
        expected = headers.get(HDR_EXPECTED_LAST_SUBJECT_SEQUENCE)
        if expected is not None:
            last = self.last_on(subject)
            actual = last.seq if last is not None else 0
            if int(expected) != actual:
                raise BadRequestError(
                    code=400,
                    err_code=ERR_WRONG_LAST_SEQUENCE,
                    description=f"wrong last sequence: {actual}",
                    stream=self.name,
                )
        due = None
        schedule = headers.get(names.HDR_SCHEDULE)
        if schedule is not None:
            if not self.config.allow_msg_schedules:
                raise APIError(
                    code=400,
                    err_code=ERR_SCHEDULES_DISABLED,
                    description="message schedules is disabled",
                    stream=self.name,
                )
            due = parse_at(schedule)
        self.last_seq += 1
        stored = {k: v for k, v in headers.items() if k != HDR_EXPECTED_LAST_SUBJECT_SEQUENCE}
        message = StoredMessage(self.last_seq, subject, data, stored, datetime.now(UTC), due=due)
        self.messages[message.seq] = message
        if msg_id is not None:
            self._ids[msg_id] = (message.seq, now)
        self._keep_per_subject(subject)
        return Stored(self.name, message.seq)

    def _window(self) -> float:
        return float(self.config.duplicate_window or DEFAULT_DUPLICATE_WINDOW)

    def _keep_per_subject(self, subject: str) -> None:
        keep = self.config.max_msgs_per_subject
        if keep is None or keep <= 0:
            return
        on_subject = [m.seq for m in self.messages.values() if m.subject == subject]
        for seq in on_subject[:-keep]:
            del self.messages[seq]

    def last_on(self, subject: str) -> StoredMessage | None:
        """The newest message stored on ``subject``."""
        found = None
        for message in self.messages.values():
            if message.subject == subject:
                found = message
        return found

    def delete(self, seq: int) -> None:
        """Remove message ``seq``; raises ``NotFoundError`` when it is not there."""
        if self.messages.pop(seq, None) is None:
            raise NotFoundError(code=404, err_code=10037, description="no message found")

    def purge(self, subject: str | None = None) -> int:
        """Remove every message (on ``subject`` only, when given); how many went."""
        gone = [s for s, m in self.messages.items() if subject is None or m.subject == subject]
        for seq in gone:
            del self.messages[seq]
        return len(gone)

    def info(self, subjects_filter: str | None = None) -> StreamInfo:
        """The stream's info, as ``js.stream_info`` returns it."""
        seqs = list(self.messages)
        subjects: dict[str, int] | None = None
        if subjects_filter is not None:
            subjects = {}
            for message in self.messages.values():
                if subject_matches(subjects_filter, message.subject):
                    subjects[message.subject] = subjects.get(message.subject, 0) + 1
        state = StreamState(
            messages=len(seqs),
            bytes=sum(len(m.data) for m in self.messages.values()),
            first_seq=seqs[0] if seqs else self.last_seq + 1,
            last_seq=self.last_seq,
            consumer_count=len(self.consumers),
            subjects=subjects,
        )
        return StreamInfo(config=self.config, state=state, created=self.created)

    # The consumer ----------------------------------------------------------------------------

    def consumer(self, name: str) -> ConsumerConfig:
        """The configuration of consumer ``name``; ``NotFoundError`` when there is none."""
        config = self.consumers.get(name)
        if config is None:
            raise NotFoundError(code=404, err_code=10014, description="consumer not found")
        return config

    def consumer_info(self, name: str) -> ConsumerInfo:
        """The consumer's info, as ``js.consumer_info`` returns it."""
        config = self.consumer(name)
        waiting = [m for m in self._filtered(config) if m.due is None]
        return ConsumerInfo(
            name=name,
            stream_name=self.name,
            config=config,
            created=self.created,
            num_pending=sum(not m.in_flight for m in waiting),
            num_ack_pending=sum(m.in_flight for m in waiting),
            num_redelivered=sum(m.deliveries > 1 for m in waiting),
            num_waiting=0,
        )

    def _filtered(self, config: ConsumerConfig) -> list[StoredMessage]:
        pattern = config.filter_subject or ">"
        return [m for m in self.messages.values() if subject_matches(pattern, m.subject)]

    def pop_due_schedules(self, *, skip_delays: bool) -> list[StoredMessage]:
        """Take out the held schedules that are due now (every ``@at`` one with ``skip_delays``)."""
        now = datetime.now(UTC)
        due = [
            m for m in self.messages.values()
            if m.due is not None and (skip_delays or m.due <= now)
        ]  # fmt: skip
        for message in due:
            del self.messages[message.seq]
        return due

    def take(self, consumer: str, *, skip_delays: bool) -> StoredMessage | None:
        """The next message for ``consumer`` (its delivery counted), or None."""
        config = self.consumer(consumer)
        limit = config.max_deliver if config.max_deliver and config.max_deliver > 0 else None
        now = time.monotonic()
        for message in self._filtered(config):
            if message.in_flight or message.due is not None:
                continue
            if limit is not None and message.deliveries >= limit:
                continue  # the server never delivers it again
            if not skip_delays and message.available_at > now:
                continue
            message.deliveries += 1
            message.in_flight = True
            return message
        return None

    def waiting(self, consumer: str) -> list[StoredMessage]:
        """What ``consumer`` has still to be delivered, delayed ones and held schedules too."""
        config = self.consumer(consumer)
        return [m for m in self._filtered(config) if not m.in_flight] + [
            m for m in self.messages.values() if m.due is not None
        ]

    def settle(self, seq: int, action: str, delay: float | None = None) -> None:
        """Apply an ``ack``, ``term`` or ``nak`` (after ``delay`` seconds) to message ``seq``."""
        message = self.messages.get(seq)
        if message is None or not message.in_flight:
            return  # settled already, or purged meanwhile
        message.in_flight = False
        if action == "nak":
            message.available_at = time.monotonic() + (delay or 0.0)
        elif self.work_queue:
            del self.messages[seq]

    def ack_subject(self, consumer: str, message: StoredMessage) -> str:
        """The reply subject of a delivery, shaped as JetStream's, so its position parses."""
        pending = sum(not m.in_flight for m in self.messages.values())
        return (
            f"$JS.ACK.{self.name}.{consumer}.{message.deliveries}.{message.seq}."
            f"{message.seq}.{time.time_ns()}.{pending}"
        )


def stream_config(config: StreamConfig | None, params: dict[str, Any]) -> StreamConfig:
    """A ``StreamConfig`` from what ``add_stream`` was given (an object or keywords)."""
    if config is None:
        return StreamConfig(**params)
    return dataclasses.replace(config, **params) if params else config
