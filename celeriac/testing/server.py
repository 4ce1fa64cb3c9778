"""An in-memory NATS server with JetStream: what tests use instead of a nats-server.

Every connection a test opens (one per event loop: the SDK's background loop for
blocking calls, an async test's own loop, the memory worker's) talks to the same
``MemoryNats``, so what one publishes the others see, as with a real server. A
publish goes to the core subscriptions of its subject and to the stream that
captures it (see ``streams``); a publish with a reply subject is answered as
JetStream answers (an acknowledgement, a refusal, or "no responders"). One lock
guards everything, and a subscription's callback runs on the loop it was made on.

It also shows a test what is inside: the tasks waiting in each queue, the dead
letters and the stored results.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from nats.js.api import ConsumerConfig, StreamConfig
from nats.js.errors import APIError, BadRequestError, NoStreamResponseError, NotFoundError
from pydantic import ValidationError

from celeriac.protocol import names
from celeriac.protocol.envelope import DeadLetter, ResultRecord, TaskMessage
from celeriac.testing.streams import (
    HDR_SCHEDULER,
    MemoryStream,
    Stored,
    StoredMessage,
    subject_matches,
)

# nats-server's default largest message.
DEFAULT_MAX_PAYLOAD = 1024 * 1024
# Headers the server takes off a schedule's message when it moves it to its target.
_SCHEDULE_ONLY = (names.HDR_SCHEDULE, names.HDR_SCHEDULE_TARGET, names.HDR_MSG_ID)


@dataclass(frozen=True)
class CoreMessage:
    """A message as a subscription callback receives it (nats-py's ``Msg`` fields in use)."""

    subject: str
    data: bytes
    headers: dict[str, str] | None = None
    reply: str = ""
    # The stream sequence, when a stream stored it (KV watchers read it as the revision).
    seq: int | None = None
    # The stream's headers, for code that reads nats-py's ``header`` spelling.
    header: dict[str, str] | None = None


Callback = Callable[[CoreMessage], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Subscription:
    """A core subscription: where matching publishes go, and on which loop they run."""

    sid: int
    pattern: str
    callback: Callback
    loop: asyncio.AbstractEventLoop


@dataclass(frozen=True)
class Taken:
    """A delivery handed to the memory worker: the message and where to settle it."""

    queue: str
    stream: str
    message: StoredMessage
    reply: str


@dataclass
class MemoryNats:
    """The server: streams, subscriptions, and what a test may look at."""

    max_payload: int = DEFAULT_MAX_PAYLOAD
    # Awaited with the task id after a publish lands on a queue (eager mode runs it there).
    on_enqueued: Callable[[str | None], Awaitable[None]] | None = None
    # Guards every stream and subscription: held for each read and write.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _streams: dict[str, MemoryStream] = field(default_factory=dict, repr=False)
    _subs: dict[int, Subscription] = field(default_factory=dict, repr=False)
    _sids: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)
    _running: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    # Core NATS --------------------------------------------------------------------------------

    def new_inbox(self) -> str:
        """A fresh reply subject."""
        return f"_INBOX.memory.{next(self._sids)}"

    def subscribe(self, pattern: str, callback: Callback) -> int:
        """Call ``callback`` (on the calling loop) for each publish matching ``pattern``."""
        loop = asyncio.get_running_loop()
        with self.lock:
            sid = next(self._sids)
            self._subs[sid] = Subscription(sid, pattern, callback, loop)
        return sid

    def watch(
        self, stream: str, pattern: str, callback: Callback
    ) -> tuple[int, list[StoredMessage]]:
        """Subscribe to ``pattern`` and take the last message of each subject ``stream``
        holds on it, in one step, so nothing stored in between is missed or seen twice."""
        with self.lock:
            held = self.stream(stream)
            sid = self.subscribe(pattern, callback)
            latest: dict[str, StoredMessage] = {}
            for message in held.messages.values():
                if subject_matches(pattern, message.subject):
                    latest[message.subject] = message
            return sid, sorted(latest.values(), key=lambda m: m.seq)

    def unsubscribe(self, sid: int) -> None:
        """Stop a subscription (nothing is delivered to it any more)."""
        with self.lock:
            self._subs.pop(sid, None)

    def publish(
        self, subject: str, data: bytes, headers: dict[str, str], reply: str = ""
    ) -> Stored | None:
        """A core publish: stored by the stream capturing ``subject`` (answered on
        ``reply`` as JetStream answers), seen by the subscriptions."""
        with self.lock:
            try:
                stored = self._store(subject, data, headers)
            except APIError as exc:
                if reply:
                    error = {"code": exc.code, "err_code": exc.err_code,
                             "description": exc.description}  # fmt: skip
                    self._send(CoreMessage(reply, json.dumps({"error": error}).encode()))
                return None
            if reply:
                if stored is None:
                    self._send(CoreMessage(reply, b"", {"Status": "503"}))
                else:
                    self._send(CoreMessage(reply, stored.ack_json()))
            return stored

    def publish_stream(self, subject: str, data: bytes, headers: dict[str, str]) -> Stored:
        """A JetStream publish: the ack, or the error ``js.publish`` would raise."""
        with self.lock:
            stored = self._store(subject, data, headers)
        if stored is None:
            raise NoStreamResponseError()
        return stored

    async def enqueued(self, stored: Stored | None) -> None:
        """Run the enqueue hook when ``stored`` is a new message for a queue's consumer."""
        hook = self.on_enqueued
        if hook is None or stored is None or stored.duplicate:
            return
        with self.lock:
            stream = self._streams.get(stored.stream)
            if stream is None or not stream.consumers:
                return
            message = stream.messages.get(stored.seq)
            task_id = message.headers.get(names.HDR_MSG_ID) if message is not None else None
        await hook(task_id)

    def _store(self, subject: str, data: bytes, headers: dict[str, str]) -> Stored | None:
        stream = next((s for s in self._streams.values() if s.captures(subject)), None)
        stored = None
        if stream is not None:
            stored = stream.store(subject, data, headers)
            if stored.duplicate:
                return stored
        header = dict(headers) or None
        message = CoreMessage(subject, data, header, seq=stored.seq if stored else None,
                              header=header)  # fmt: skip
        self._send(message)
        return stored

    def _send(self, message: CoreMessage) -> None:
        for sub in list(self._subs.values()):
            if subject_matches(sub.pattern, message.subject):
                try:
                    sub.loop.call_soon_threadsafe(self._run, sub, message)
                except RuntimeError:  # its loop is closed: nobody listens any more
                    self._subs.pop(sub.sid, None)

    def _run(self, sub: Subscription, message: CoreMessage) -> None:
        if sub.sid not in self._subs:
            return
        task: asyncio.Task[None] = sub.loop.create_task(sub.callback(message))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    # JetStream --------------------------------------------------------------------------------

    def stream(self, name: str) -> MemoryStream:
        """The stream ``name``; ``NotFoundError`` when there is none."""
        with self.lock:
            stream = self._streams.get(name)
        if stream is None:
            raise NotFoundError(code=404, err_code=10059, description="stream not found")
        return stream

    def streams(self) -> list[MemoryStream]:
        """Every stream, oldest first."""
        with self.lock:
            return list(self._streams.values())

    def add_stream(self, config: StreamConfig) -> MemoryStream:
        """Create a stream; the same configuration again is no error, another one is."""
        with self.lock:
            existing = self._streams.get(str(config.name))
            if existing is not None:
                if existing.config != config:
                    raise BadRequestError(
                        code=400,
                        err_code=10058,
                        description="stream name already in use with a different configuration",
                    )
                return existing
            stream = MemoryStream(config)
            self._streams[stream.name] = stream
            return stream

    def delete_stream(self, name: str) -> None:
        """Remove a stream and everything in it."""
        with self.lock:
            if self._streams.pop(name, None) is None:
                raise NotFoundError(code=404, err_code=10059, description="stream not found")

    def add_consumer(self, stream: str, config: ConsumerConfig) -> str:
        """Add (or keep) a durable consumer on ``stream``; its name."""
        name = str(config.durable_name or config.name)
        with self.lock:
            self.stream(stream).consumers.setdefault(name, config)
        return name

    # The memory worker's side -----------------------------------------------------------------

    def move_due_schedules(self, *, skip_delays: bool) -> None:
        """Move held ``@at`` schedules that are due (all of them, skipping delays) to their
        target subjects, as the server does: without ``Nats-Msg-Id``, with ``Nats-Scheduler``."""
        with self.lock:
            for stream in list(self._streams.values()):
                for held in stream.pop_due_schedules(skip_delays=skip_delays):
                    target = held.headers.get(names.HDR_SCHEDULE_TARGET)
                    if not target:
                        continue
                    headers = {k: v for k, v in held.headers.items() if k not in _SCHEDULE_ONLY}
                    headers[HDR_SCHEDULER] = held.subject
                    self._store(target, held.data, headers)

    def take(self, queues: list[str] | None, *, skip_delays: bool) -> Taken | None:
        """The next delivery from ``queues`` (None: every queue), or None when none is due."""
        with self.lock:
            self.move_due_schedules(skip_delays=skip_delays)
            for stream in self._streams.values():
                queue = _queue_of(stream)
                if queue is None or (queues is not None and queue not in queues):
                    continue
                message = stream.take(names.CONSUMER_NAME, skip_delays=skip_delays)
                if message is not None:
                    reply = stream.ack_subject(names.CONSUMER_NAME, message)
                    return Taken(queue, stream.name, message, reply)
        return None

    def settle(self, stream: str, seq: int, action: str, delay: float | None = None) -> None:
        """Apply a delivery's ``ack``, ``nak`` or ``term``."""
        with self.lock:
            found = self._streams.get(stream)
            if found is not None:
                found.settle(seq, action, delay)

    # What a test looks at ---------------------------------------------------------------------

    def queues(self) -> list[str]:
        """The queues declared so far."""
        with self.lock:
            return [q for s in self._streams.values() if (q := _queue_of(s)) is not None]

    def tasks(self, queue: str | None = None) -> list[TaskMessage]:
        """The tasks waiting in ``queue`` (None: every queue), delayed ones included, oldest
        first; messages that are not task envelopes are left out."""
        found = []
        with self.lock:
            for stream in self._streams.values():
                name = _queue_of(stream)
                if name is None or (queue is not None and name != queue):
                    continue
                for message in stream.waiting(names.CONSUMER_NAME):
                    try:
                        found.append(TaskMessage.model_validate_json(message.data))
                    except ValidationError:
                        continue
        return found

    def dead_letters(self, queue: str | None = None) -> list[DeadLetter]:
        """The dead letters of ``queue`` (None: every queue), oldest first."""
        with self.lock:
            streams = [
                s for s in self._streams.values()
                if s.name.startswith(names.DEAD_LETTER_STREAM_PREFIX)
                and (queue is None or s.name == names.dead_letter_stream_name(queue))
            ]  # fmt: skip
            bodies = [m.data for s in streams for m in s.messages.values()]
        return [DeadLetter.model_validate_json(body) for body in bodies]

    def result(self, task_id: str) -> ResultRecord | None:
        """The result record stored under ``task_id``, or None."""
        subject = names.kv_subject(names.RESULTS_BUCKET, task_id)
        with self.lock:
            stream = self._streams.get(f"KV_{names.RESULTS_BUCKET}")
            message = stream.last_on(subject) if stream is not None else None
        if message is None or not message.data:
            return None
        return ResultRecord.model_validate_json(message.data)


def _queue_of(stream: MemoryStream) -> str | None:
    """The queue whose work stream ``stream`` is, or None."""
    if names.CONSUMER_NAME not in stream.consumers:
        return None
    if not stream.name.startswith(names.STREAM_PREFIX):
        return None
    return stream.name[len(names.STREAM_PREFIX) :]
