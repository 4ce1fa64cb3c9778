"""Pure builders for a queue's JetStream objects.

The SDK (declaring a missing queue on a laptop) and the operator (reconciling a
TaskQueue) build streams and consumers from the same functions, so both make
identical objects. The results are keyword arguments for nats-py's
``StreamConfig`` / ``ConsumerConfig`` (durations in seconds); no nats import here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from celeriac.protocol import names
from celeriac.protocol.workers import WORKERS_TTL_SECONDS

# Deliveries of one message before JetStream stops (a consumer's max_deliver).
DEFAULT_MAX_DELIVERIES = 100


class QueueSettings(BaseModel):
    """What a queue's streams and consumer are made of; defaults suit a laptop."""

    model_config = ConfigDict(frozen=True)

    max_age_seconds: float = Field(default=7 * 24 * 3600, ge=0)
    max_messages: int = Field(default=-1, ge=-1)
    max_bytes: int = Field(default=-1, ge=-1)
    replicas: int = Field(default=1, ge=1, le=5)
    duplicate_window_seconds: float = Field(default=120, gt=0)
    ack_wait_seconds: float = Field(default=30, gt=0)
    # A backstop: the worker dead-letters after the task's own max_retries, and a
    # message whose deliveries run out is dead-lettered as poison (-1: unlimited).
    max_deliveries: int = Field(default=DEFAULT_MAX_DELIVERIES, ge=-1)
    max_ack_pending: int = Field(default=10_000, ge=1)
    # Redelivery delays after an ack timeout (JetStream consumer backoff); empty: ack_wait.
    backoff_seconds: tuple[float, ...] = ()
    dead_letter_max_age_seconds: float = Field(default=30 * 24 * 3600, ge=0)


def work_stream_config(queue: str, settings: QueueSettings) -> dict[str, Any]:
    """The work stream: task subject plus the subjects where delayed tasks wait."""
    return {
        "name": names.stream_name(queue),
        "subjects": [names.task_subject(queue), names.schedule_subjects(queue)],
        "retention": "workqueue",
        "storage": "file",
        "max_age": settings.max_age_seconds,
        "max_msgs": settings.max_messages,
        "max_bytes": settings.max_bytes,
        "num_replicas": settings.replicas,
        "duplicate_window": settings.duplicate_window_seconds,
        "allow_msg_schedules": True,
        "allow_msg_ttl": True,
    }


def dead_letter_stream_config(queue: str, settings: QueueSettings) -> dict[str, Any]:
    """The dead-letter stream: kept by age only, never consumed automatically."""
    return {
        "name": names.dead_letter_stream_name(queue),
        "subjects": [names.dead_letter_subject(queue)],
        "retention": "limits",
        "storage": "file",
        "max_age": settings.dead_letter_max_age_seconds,
        "num_replicas": settings.replicas,
    }


def consumer_config(queue: str, settings: QueueSettings) -> dict[str, Any]:
    """The durable pull consumer every worker of ``queue`` shares."""
    return {
        "durable_name": names.CONSUMER_NAME,
        "filter_subject": names.task_subject(queue),
        "ack_policy": "explicit",
        "deliver_policy": "all",
        "ack_wait": settings.ack_wait_seconds,
        "max_deliver": settings.max_deliveries,
        "max_ack_pending": settings.max_ack_pending,
        "max_waiting": 512,
        **({"backoff": list(settings.backoff_seconds)} if settings.backoff_seconds else {}),
    }


# Shared KV buckets and how long their entries live (seconds); the SDK declares them
# with the same values on a laptop, the operator creates them in a cluster.
# Results live a day by default (Celery's default too). Revocations and chord documents
# outlive any task still waiting in a default queue (streams keep messages 7 days).
RESULT_TTL_SECONDS = 24 * 3600.0
REVOKED_TTL_SECONDS = 30 * 24 * 3600.0
CHORDS_TTL_SECONDS = 7 * 24 * 3600.0
# A schedule's state (last run, counts) is kept while the schedule fires; a year
# after its last fire it is gone.
SCHEDULES_TTL_SECONDS = 366 * 24 * 3600.0


def shared_bucket_configs(replicas: int = 1) -> list[dict[str, Any]]:
    """Keyword arguments for nats-py's ``KeyValueConfig`` of every shared bucket."""
    ttls = {
        names.RESULTS_BUCKET: RESULT_TTL_SECONDS,
        names.REVOKED_BUCKET: REVOKED_TTL_SECONDS,
        names.CHORDS_BUCKET: CHORDS_TTL_SECONDS,
        names.SCHEDULES_BUCKET: SCHEDULES_TTL_SECONDS,
        names.WORKERS_BUCKET: WORKERS_TTL_SECONDS,
    }
    return [
        {"bucket": bucket, "ttl": ttl, "history": 1, "replicas": replicas}
        for bucket, ttl in ttls.items()
    ]


# Task events are for watching what happens now and lately, not for keeping.
EVENTS_MAX_AGE_SECONDS = 3600.0
EVENTS_MAX_BYTES = 256 * 1024 * 1024


class EventsSettings(BaseModel):
    """The limits of the task events stream, chosen per install (operator flags)."""

    model_config = ConfigDict(frozen=True)

    max_age_seconds: float = Field(default=EVENTS_MAX_AGE_SECONDS, gt=0)
    max_bytes: int = Field(default=EVENTS_MAX_BYTES, ge=1024)
    replicas: int = Field(default=1, ge=1, le=5)


def events_stream_config(settings: EventsSettings) -> dict[str, Any]:
    """The task events stream: every queue's events, the oldest dropped past the limits."""
    return {
        "name": names.EVENTS_STREAM,
        "subjects": [names.EVENTS_SUBJECTS],
        "retention": "limits",
        "discard": "old",
        "storage": "file",
        "max_age": settings.max_age_seconds,
        "max_bytes": settings.max_bytes,
        "num_replicas": settings.replicas,
        # Workers publish events without waiting for an acknowledgement.
        "no_ack": True,
    }
