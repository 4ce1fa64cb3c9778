"""``celeriac events``: follow task events live, or from a while back, until Ctrl-C.

Reads the ``CELERIAC_EVENTS`` stream through an ordered consumer (nothing durable
is left on the server), asking the server for the queues and types wanted by
subject; the task name is not in the subject, so ``--task`` is checked here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import click
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from celeriac.admin.terminal import OUTPUT, URL, run
from celeriac.broker import Broker
from celeriac.exceptions import CeleriacError
from celeriac.protocol import names
from celeriac.protocol.events import EventType, TaskEvent
from celeriac.protocol.kubeschema import parse_duration

NO_EVENTS = (
    f"no task events: stream {names.EVENTS_STREAM} does not exist; start workers with "
    "`celeriac worker --events` (or CELERIAC_EVENTS=1, or `events: true` in a WorkerPool)"
)


def subject_filters(queues: Sequence[str], types: Sequence[str]) -> list[str]:
    """The subjects to ask the server for: every queue and type wanted (none: all)."""
    every: list[str | None] = [None]
    return [
        names.event_filter(queue, kind)
        for queue in (list(queues) or every)
        for kind in (list(dict.fromkeys(types)) or every)
    ]


def format_line(event: TaskEvent) -> str:
    """One event as one line: time, type, queue, task, id, then run time and error."""
    moment = event.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    fields = [
        moment,
        f"{event.type.value:<13}",
        event.queue,
        event.task or "-",
        event.task_id or "-",
    ]
    if event.runtime is not None:
        fields.append(f"{event.runtime:.3f}s")
    if event.error and event.error_type and not event.error.startswith(event.error_type):
        fields.append(f"{event.error_type}: {event.error}")
    elif event.error or event.error_type:
        fields.append(event.error or event.error_type or "")
    if event.eta is not None:
        fields.append(f"again at {event.eta.astimezone(UTC).strftime('%H:%M:%S')}")
    return "  ".join(fields)


def _consumer_config(filters: list[str], since: float | None) -> ConsumerConfig:
    config = ConsumerConfig()
    if len(filters) > 1:
        config.filter_subjects = filters
    if since is None:
        config.deliver_policy = DeliverPolicy.NEW
    else:
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = datetime.now(UTC) - timedelta(seconds=since)
    return config


def _since(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _queues(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    try:
        return [names.check_queue_name(q) for q in value]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@URL
@OUTPUT
@click.option("-Q", "--queue", "queues", multiple=True, callback=_queues,
              help="only this queue (repeatable)")  # fmt: skip
@click.option("--task", "task", metavar="NAME", help="only this task")
@click.option("--type", "types", multiple=True, type=click.Choice([t.value for t in EventType]),
              help="only events of this type (repeatable)")  # fmt: skip
@click.option("--since", callback=_since, metavar="DURATION",
              help="start this far back, e.g. 5m or 1h (default: now)")  # fmt: skip
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="stop after N events")
def events(
    *,
    nats_url: str | None,
    output: str,
    queues: list[str],
    task: str | None,
    types: tuple[str, ...],
    since: float | None,
    limit: int | None,
) -> None:
    """Follow task events as workers publish them (workers run with --events); Ctrl-C ends."""
    filters = subject_filters(queues, types)

    async def follow(broker: Broker) -> None:
        try:
            await broker.js.stream_info(names.EVENTS_STREAM)
        except NotFoundError:
            raise CeleriacError(NO_EVENTS) from None
        sub = await broker.js.subscribe(
            filters[0],
            stream=names.EVENTS_STREAM,
            ordered_consumer=True,
            config=_consumer_config(filters, since),
        )
        shown = 0
        try:
            async for msg in sub.messages:
                event = _parse(msg.data, msg.subject)
                if event is None or (task is not None and event.task != task):
                    continue
                _show(event, output)
                shown += 1
                if limit is not None and shown >= limit:
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    with contextlib.suppress(KeyboardInterrupt):
        run(nats_url, follow)


def _parse(data: bytes, subject: str) -> TaskEvent | None:
    try:
        return TaskEvent.model_validate_json(data)
    except ValidationError:
        click.echo(f"skipping a malformed event on {subject}", err=True)
        return None


def _show(event: TaskEvent, output: str) -> None:
    if output == "json":
        document = event.model_dump(mode="json", exclude_none=True)
        click.echo(json.dumps(document, separators=(",", ":")))
    else:
        click.echo(format_line(event))
