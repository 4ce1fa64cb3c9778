"""Every stream, subject, consumer, bucket and header name on the wire, in one place.

A queue named ``emails`` lives in these JetStream objects::

    stream   CELERIAC_emails          subjects celeriac.tasks.emails, celeriac.schedules.emails.>
    consumer workers                  durable pull consumer filtered on celeriac.tasks.emails
    stream   CELERIAC_DLQ_emails      subject  celeriac.dlq.emails

Results, revocations and chord counters are JetStream key-value buckets shared by
all queues.
"""

from __future__ import annotations

import re

PROTOCOL_VERSION = 1

# Queue names double as parts of stream names and subjects: keep them to what
# both accept, and to what a Kubernetes object name accepts.
QUEUE_NAME_PATTERN = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"
_QUEUE_NAME = re.compile(QUEUE_NAME_PATTERN)
# Task ids become KV keys and Nats-Msg-Id values, and the last tokens of a delayed
# task's subject: "periodic." is reserved, as periodic schedules live under it.
TASK_ID_PATTERN = r"^(?!periodic\.)[A-Za-z0-9_=-][A-Za-z0-9_=.-]{0,199}$"
_TASK_ID = re.compile(TASK_ID_PATTERN)

DEFAULT_QUEUE = "default"
CONSUMER_NAME = "workers"

RESULTS_BUCKET = "celeriac_results"
REVOKED_BUCKET = "celeriac_revoked"
CHORDS_BUCKET = "celeriac_chords"
SCHEDULES_BUCKET = "celeriac_schedules"
WORKERS_BUCKET = "celeriac_workers"
# Task events of every queue (``celeriac worker --events``), kept by age and size.
EVENTS_STREAM = "CELERIAC_EVENTS"
EVENTS_SUBJECTS = "celeriac.events.>"

# Headers. Nats-* are interpreted by the server; Celeriac-* by Celeriac.
HDR_MSG_ID = "Nats-Msg-Id"
HDR_SCHEDULE = "Nats-Schedule"
HDR_SCHEDULE_TARGET = "Nats-Schedule-Target"
HDR_TASK = "Celeriac-Task"
HDR_PROTOCOL = "Celeriac-Protocol"
HDR_REASON = "Celeriac-Reason"
HDR_ERROR = "Celeriac-Error"
# On a write to the revocations bucket: also stop the task if it runs (SIGTERM or SIGKILL).
HDR_TERMINATE = "Celeriac-Terminate"
TERMINATE_SIGNALS = ("SIGTERM", "SIGKILL")


def is_valid_queue_name(queue: str) -> bool:
    """True when ``queue`` can name a queue (stream-, subject- and DNS-safe)."""
    return bool(_QUEUE_NAME.match(queue))


def is_valid_task_id(task_id: str) -> bool:
    """True when ``task_id`` is usable as a KV key and message id."""
    return bool(_TASK_ID.match(task_id))


def check_queue_name(queue: str) -> str:
    """Return ``queue`` or raise ValueError saying what a queue name may contain."""
    if not is_valid_queue_name(queue):
        raise ValueError(
            f"invalid queue name {queue!r}: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting and ending with a letter or digit"
        )
    return queue


# Work streams are CELERIAC_<queue> and dead-letter streams CELERIAC_DLQ_<queue>; queue
# names are lowercase, so neither prefix can be mistaken for the other, nor for
# CELERIAC_EVENTS or CELERIAC_WEBHOOKS.
STREAM_PREFIX = "CELERIAC_"
DEAD_LETTER_STREAM_PREFIX = "CELERIAC_DLQ_"


def stream_name(queue: str) -> str:
    """The work stream of ``queue``."""
    return f"{STREAM_PREFIX}{check_queue_name(queue)}"


def dead_letter_stream_name(queue: str) -> str:
    """The dead-letter stream of ``queue``."""
    return f"{DEAD_LETTER_STREAM_PREFIX}{check_queue_name(queue)}"


def task_subject(queue: str) -> str:
    """The subject workers of ``queue`` consume; publishing here enqueues a task."""
    return f"celeriac.tasks.{check_queue_name(queue)}"


def schedule_subject(queue: str, task_id: str) -> str:
    """Where a delayed task waits (as a JetStream message schedule) until it is due."""
    return f"celeriac.schedules.{check_queue_name(queue)}.{task_id}"


def schedule_subjects(queue: str) -> str:
    """Wildcard over every schedule subject of ``queue``."""
    return f"celeriac.schedules.{check_queue_name(queue)}.>"


def dead_letter_subject(queue: str) -> str:
    """The subject dead-lettered tasks of ``queue`` are published on."""
    return f"celeriac.dlq.{check_queue_name(queue)}"


def event_subject(queue: str, event_type: str) -> str:
    """The subject a task event of ``queue`` is published on (type: received, started...)."""
    return f"celeriac.events.{check_queue_name(queue)}.{event_type}"


def event_filter(queue: str | None = None, event_type: str | None = None) -> str:
    """The subject filter of events of ``queue`` and ``event_type`` (None: any)."""
    return f"celeriac.events.{queue or '*'}.{event_type or '*'}"


def kv_subject(bucket: str, key: str) -> str:
    """The subject a KV write of ``key`` in ``bucket`` is published on."""
    return f"$KV.{bucket}.{key}"


def kv_subjects(bucket: str) -> str:
    """Every key's subject in ``bucket`` (to follow its writes)."""
    return f"$KV.{bucket}.>"


def display_url(url: str) -> str:
    """``url`` with any password replaced, for logs and error messages."""
    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)


def servers(url: str) -> list[str]:
    """The URLs of a comma-separated seed list (a cluster's nodes), as NATS clients take
    several servers: a list, since ``nats://a:4222,nats://b:4222`` is not one URL."""
    return [part.strip() for part in url.split(",") if part.strip()] or [url]
