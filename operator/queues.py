"""Makes a queue's JetStream objects match a TaskQueue, and reads its backlog.

Streams and the consumer are built by :mod:`celeriac.protocol.jetstream` (the same
builders the SDK uses on a laptop). Creating is idempotent; on update, what
JetStream cannot change in place (storage type, retention, ack policy) is left
as it is and reported, so the TaskQueue status can say what to do about it.
Both streams carry the owning TaskQueue's claim in their metadata
(:mod:`celeriac.operator.claims`); an update keeps every other metadata key.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, KeyValueConfig, StreamConfig
from nats.js.errors import APIError, BadRequestError, NotFoundError

from celeriac.operator import claims
from celeriac.protocol import jetstream, names
from celeriac.protocol.webhooks import QUEUE_WEBHOOK_KEY, WebhookTarget

# Stream settings JetStream refuses to change on an existing stream.
_STREAM_FIXED = ("storage", "retention")
# Consumer settings JetStream refuses to change on an existing consumer.
_CONSUMER_FIXED = ("ack_policy", "deliver_policy")


@dataclass
class QueueReport:
    """What one reconciliation did and what it could not do."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class QueueStats:
    """Live numbers of one queue, read through the JetStream API."""

    pending: int
    ack_pending: int
    redelivered: int
    # Deliveries acknowledged or terminated so far (for the completion rate).
    completed: int
    dead_letters: int


def _plain(value: Any) -> Any:
    """Enum members as their values, so configs compare with the builders' strings."""
    return getattr(value, "value", value)


def _same(have: Any, want: Any) -> bool:
    have, want = _plain(have), _plain(want)
    if isinstance(want, float) or isinstance(have, float):
        return have is not None and math.isclose(float(have), float(want), rel_tol=1e-6)
    if isinstance(want, list):
        return list(have or []) == want
    return bool(have == want)


def _differences(current: Any, wanted: dict[str, Any]) -> list[str]:
    return [k for k, v in wanted.items() if k != "name" and not _same(getattr(current, k), v)]


def _with(
    metadata: dict[str, str] | None, extra: Mapping[str, str | None]
) -> dict[str, str] | None:
    """``metadata`` with the ``extra`` keys set (a None value: removed)."""
    merged = dict(metadata or {})
    for key, value in extra.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged if merged or metadata else None


async def _ensure_stream(
    js: JetStreamContext,
    wanted: dict[str, Any],
    owner: str | None,
    report: QueueReport,
    extra: Mapping[str, str | None] | None = None,
) -> None:
    """Create or update a stream; ``extra`` metadata keys are set (None: removed)."""
    name = str(wanted["name"])
    extra = extra or {}
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        metadata = _with(claims.claimed(None, owner) if owner else None, extra)
        await js.add_stream(StreamConfig(**wanted, metadata=metadata))
        report.created.append(f"stream {name}")
        return
    wanted = dict(wanted)
    for key in _STREAM_FIXED:
        have = _plain(getattr(info.config, key))
        if have != wanted[key]:
            report.problems.append(
                f"stream {name} has {key} {have!r}, the TaskQueue wants {wanted[key]!r}: "
                "JetStream cannot change it; delete the stream to recreate it"
            )
            wanted[key] = have
    changed = _differences(info.config, wanted)
    have_owner = (info.config.metadata or {}).get(claims.OWNER_KEY)
    if owner and have_owner != owner:
        changed.append("owner")
    have_metadata = info.config.metadata
    changed += [key for key, value in extra.items() if (have_metadata or {}).get(key) != value]
    if not changed:
        return
    # An update replaces the whole config: metadata left out would be dropped.
    wanted["metadata"] = _with(
        claims.claimed(have_metadata, owner) if owner else claims.user_metadata(have_metadata),
        extra,
    )
    try:
        await js.update_stream(StreamConfig(**wanted))
        report.updated.append(f"stream {name} ({', '.join(changed)})")
    except APIError as exc:
        report.problems.append(f"stream {name}: JetStream refused {', '.join(changed)}: {exc}")
        if owner and have_owner != owner:
            # The claim must hold even when a setting cannot be applied.
            info.config.metadata = wanted["metadata"]
            await js.update_stream(info.config)
            report.updated.append(f"stream {name} (owner)")


async def _ensure_consumer(
    js: JetStreamContext, queue: str, settings: jetstream.QueueSettings, report: QueueReport
) -> None:
    stream = names.stream_name(queue)
    wanted = jetstream.consumer_config(queue, settings)
    durable = str(wanted["durable_name"])
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        await js.add_consumer(stream, ConsumerConfig(**wanted))
        report.created.append(f"consumer {stream}/{durable}")
        return
    for key in _CONSUMER_FIXED:
        have = _plain(getattr(info.config, key))
        if have != wanted[key]:
            report.problems.append(
                f"consumer {durable} has {key} {have!r}, wanted {wanted[key]!r}: JetStream "
                "cannot change it; delete the consumer to recreate it"
            )
            wanted[key] = have
    if "backoff" not in wanted and info.config.backoff:
        wanted["backoff"] = []
    changed = [k for k in _differences(info.config, wanted) if k != "durable_name"]
    if not changed:
        return
    try:
        await js.add_consumer(stream, ConsumerConfig(**wanted))
        report.updated.append(f"consumer {stream}/{durable} ({', '.join(changed)})")
    except APIError as exc:
        report.problems.append(f"consumer {durable}: JetStream refused {', '.join(changed)}: {exc}")


async def ensure_queue(
    js: JetStreamContext,
    queue: str,
    settings: jetstream.QueueSettings,
    owner: str | None = None,
    *,
    bucket_replicas: int = 1,
    events: jetstream.EventsSettings | None = None,
    webhook: WebhookTarget | None = None,
) -> QueueReport:
    """Create or update the work stream, dead-letter stream and consumer of ``queue``.

    With ``owner`` both streams record that TaskQueue's claim. Whether it may claim
    them is the caller's decision (:func:`claim_metadata`, :func:`claims.decide`).
    The work stream's metadata holds the queue's default ``webhook`` (none: removed).
    """
    report = QueueReport()
    hook = {QUEUE_WEBHOOK_KEY: webhook.model_dump_json() if webhook is not None else None}
    work = jetstream.work_stream_config(queue, settings)
    await _ensure_stream(js, work, owner, report, hook)
    await _ensure_stream(js, jetstream.dead_letter_stream_config(queue, settings), owner, report)
    await _ensure_consumer(js, queue, settings, report)
    await ensure_buckets(js, report, bucket_replicas)
    if events is not None:
        await ensure_events_stream(js, report, events)
    return report


async def ensure_events_stream(
    js: JetStreamContext, report: QueueReport, settings: jetstream.EventsSettings
) -> None:
    """Create the task events stream, or bring its limits to ``settings`` (shared by all
    queues, like the buckets: whichever TaskQueue reconciles first creates it)."""
    # Created concurrently by another reconciliation: the next one checks it.
    with contextlib.suppress(BadRequestError):
        await _ensure_stream(js, jetstream.events_stream_config(settings), None, report)


async def ensure_buckets(js: JetStreamContext, report: QueueReport, replicas: int = 1) -> None:
    """Create the shared result, revocation and chord buckets when missing, and keep their
    replicas at ``replicas`` (the only setting changed on an existing bucket)."""
    for config in jetstream.shared_bucket_configs(replicas):
        bucket = config["bucket"]
        try:
            info = await js.stream_info(f"KV_{bucket}")
        except NotFoundError:
            try:
                await js.create_key_value(KeyValueConfig(**config))
                report.created.append(f"bucket {bucket}")
            except BadRequestError:
                pass  # created concurrently by someone else: fine
            continue
        if info.config.num_replicas == replicas:
            continue
        before = info.config.num_replicas
        info.config.num_replicas = replicas
        try:
            await js.update_stream(info.config)
            report.updated.append(f"bucket {bucket} (replicas {before} -> {replicas})")
        except APIError as exc:
            report.problems.append(f"bucket {bucket}: JetStream refused {replicas} replicas: {exc}")


async def queue_stats(js: JetStreamContext, queue: str, *, dead_letters: bool = True) -> QueueStats:
    """Backlog numbers of ``queue``; NotFoundError when its stream or consumer is missing.

    ``dead_letters=False`` skips reading the dead-letter stream (one request fewer;
    ``dead_letters`` is then 0), for callers that only need the backlog.
    """
    info = await js.consumer_info(names.stream_name(queue), names.CONSUMER_NAME)
    dead = await _dead_letters(js, queue) if dead_letters else 0
    ack_pending = int(info.num_ack_pending or 0)
    delivered = int(info.delivered.consumer_seq) if info.delivered else 0
    return QueueStats(
        pending=int(info.num_pending or 0),
        ack_pending=ack_pending,
        redelivered=int(info.num_redelivered or 0),
        completed=max(0, delivered - ack_pending),
        dead_letters=dead,
    )


async def _dead_letters(js: JetStreamContext, queue: str) -> int:
    try:
        dlq = await js.stream_info(names.dead_letter_stream_name(queue))
    except NotFoundError:
        return 0
    return int(dlq.state.messages)


def _queue_streams(queue: str) -> tuple[str, str]:
    return names.stream_name(queue), names.dead_letter_stream_name(queue)


async def claim_metadata(js: JetStreamContext, queue: str) -> dict[str, str] | None:
    """The metadata holding ``queue``'s claim: its work stream's, or its dead-letter
    stream's when only that one exists; None when neither exists."""
    for stream in _queue_streams(queue):
        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            continue
        return dict(info.config.metadata or {})
    return None


async def release_queue(js: JetStreamContext, queue: str, owner: str) -> list[str]:
    """Remove ``owner``'s claim from the queue's streams (nothing else changes);
    returns the streams released."""
    released = []
    for stream in _queue_streams(queue):
        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            continue
        config = info.config
        if (config.metadata or {}).get(claims.OWNER_KEY) != owner:
            continue
        config.metadata = claims.released(config.metadata)
        await js.update_stream(config)
        released.append(stream)
    return released


async def delete_queue(js: JetStreamContext, queue: str) -> list[str]:
    """Delete the queue's streams (the consumer goes with its stream); returns what went."""
    deleted = []
    for stream in _queue_streams(queue):
        try:
            await js.delete_stream(stream)
            deleted.append(stream)
        except NotFoundError:
            pass
    return deleted
