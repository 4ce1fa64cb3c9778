"""``celeriac status | inspect | result | revoke | purge``: see and steer the queues.

Every command reads what JetStream stores (``celeriac.inspection``) from any NATS
URL, with or without Kubernetes; ``-o json`` prints the same as JSON for scripts.
Mistakes and outages are one plain sentence on stderr and exit status 1.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from celeriac import inspection
from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.protocol.envelope import ResultRecord

T = TypeVar("T")

_URL = click.option(
    "--nats-url", envvar="CELERIAC_NATS_URL", help="NATS server(s) (default: $CELERIAC_NATS_URL)"
)
_OUTPUT = click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)


def _run(nats_url: str | None, work: Callable[[Broker], Awaitable[T]]) -> T:
    """Connect, do ``work`` on the broker, disconnect; errors become one sentence."""
    from celeriac.cli import _sentence

    async def go() -> T:
        app = Celeriac("celeriac-admin", nats_url, declare_queues=False)
        try:
            return await work(await app.broker())
        finally:
            await app.aclose()

    try:
        return asyncio.run(go())
    except Exception as exc:
        raise click.ClickException(_sentence(exc)) from None


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


_TEXT_COLUMNS = {"queue", "worker", "queues", "pool", "state"}


def _table(title: str, columns: Sequence[str], rows: list[list[str]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column in _TEXT_COLUMNS else "right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _ago(moment: datetime) -> str:
    seconds = max(0, int((datetime.now(UTC) - moment).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """See and steer Celeriac's queues, workers and tasks."""


@cli.command()
@_URL
@_OUTPUT
@click.option("-Q", "--queue", "queues", multiple=True, help="only these queues")
@click.option("--sample", default=1.0, show_default=True, help="seconds to measure rates over")
def status(nats_url: str | None, output: str, queues: tuple[str, ...], sample: float) -> None:
    """Queues (waiting, in flight, rate, dead letters) and live workers."""

    async def read(broker: Broker) -> tuple[list[inspection.QueueStatus], list[Any]]:
        chosen = list(queues) or None
        found = await inspection.queues_status(broker.js, chosen, sample=max(0.0, sample))
        return found, await inspection.live_workers(broker.js)

    found, workers = _run(nats_url, read)
    if output == "json":
        _print_json({"queues": [q.as_json() for q in found],
                     "workers": [w.model_dump(mode="json") for w in workers]})  # fmt: skip
        return
    rows = [
        [q.queue, str(q.waiting), str(q.in_flight), str(q.delayed), str(q.dead_letters),
         "-" if q.rate is None else f"{q.rate:.1f}/s"]
        for q in found
    ]  # fmt: skip
    _table("Queues", ["queue", "waiting", "in flight", "delayed", "dead letters", "rate"], rows)
    _workers_table(workers)


def _workers_table(workers: list[Any]) -> None:
    rows = [
        [w.name, ",".join(w.queues), f"{w.pool} x{w.concurrency}", str(w.running),
         str(w.succeeded), str(w.failed), w.state, _ago(w.started), _ago(w.seen)]
        for w in workers
    ]  # fmt: skip
    columns = ["worker", "queues", "pool", "running", "succeeded", "failed", "state", "up",
               "seen"]  # fmt: skip
    _table(f"Workers ({len(workers)})", columns, rows)


@cli.group()
def inspect() -> None:
    """Look at live workers."""


@inspect.command("workers")
@_URL
@_OUTPUT
def inspect_workers(nats_url: str | None, output: str) -> None:
    """The workers alive now (from the workers bucket)."""
    workers = _run(nats_url, lambda broker: inspection.live_workers(broker.js))
    if output == "json":
        _print_json([w.model_dump(mode="json") for w in workers])
    else:
        _workers_table(workers)


@cli.command()
@_URL
@_OUTPUT
@click.argument("task_id")
def result(nats_url: str | None, output: str, task_id: str) -> None:
    """A task's state, result or error, traceback, retries and worker."""
    record: ResultRecord | None = _run(
        nats_url, lambda broker: inspection.task_result(broker.js, task_id)
    )
    if output == "json":
        _print_json({"id": task_id, **(record.model_dump(mode="json") if record else
                                      {"state": "PENDING"})})  # fmt: skip
        return
    if record is None:
        click.echo(f"{task_id}: PENDING (nothing stored: waiting, unknown, or expired)")
        return
    click.echo(f"{task_id}: {record.state.value}")
    details = {
        "task": record.task, "worker": record.worker, "retries": record.retries,
        "done": record.date_done, "result": None if record.error else record.result,
        "error": record.error,
    }  # fmt: skip
    for key, value in details.items():
        if value not in (None, ""):
            click.echo(f"  {key}: {json.dumps(value, default=str) if key == 'result' else value}")
    if record.traceback:
        click.echo(record.traceback.rstrip())


@cli.command()
@_URL
@click.argument("task_id")
@click.option("--reason", default="revoked from the command line", show_default=True)
def revoke(nats_url: str | None, task_id: str, reason: str) -> None:
    """Revoke a task: workers skip it from now on."""

    async def go(broker: Broker) -> None:
        await broker.revocations.revoke(task_id, reason)

    _run(nats_url, go)
    click.echo(f"revoked {task_id}: {reason}")


@cli.command()
@_URL
@click.argument("queue")
@click.option("--yes", is_flag=True, help="do not ask")
def purge(nats_url: str | None, queue: str, yes: bool) -> None:
    """Drop every task waiting in QUEUE (delayed tasks and schedules stay)."""
    if not yes:
        click.confirm(f"Drop every task waiting in queue {queue!r}?", abort=True)
    dropped = _run(nats_url, lambda broker: inspection.purge_queue(broker.js, queue))
    click.echo(f"purged {dropped} task(s) from queue {queue}")


def main(argv: Sequence[str]) -> int:
    """Run one admin command; its exit status."""
    try:
        cli.main(list(argv), prog_name="celeriac", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:
        click.echo(f"celeriac: {exc.format_message()}", err=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
