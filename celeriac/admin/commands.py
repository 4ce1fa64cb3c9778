"""The first admin commands: status, inspect workers | active | registered, result, revoke,
purge."""

from __future__ import annotations

import json
from typing import Any

import click

from celeriac import inspection
from celeriac.admin.terminal import OUTPUT, URL, ago, print_json, run, table
from celeriac.broker import Broker
from celeriac.protocol.envelope import ResultRecord
from celeriac.protocol.workers import MAX_ACTIVE_LISTED
from celeriac.revocation import terminate_signal


@click.command()
@URL
@OUTPUT
@click.option("-Q", "--queue", "queues", multiple=True, help="only these queues")
@click.option("--sample", default=1.0, show_default=True, help="seconds to measure rates over")
def status(nats_url: str | None, output: str, queues: tuple[str, ...], sample: float) -> None:
    """Queues (waiting, in flight, rate, dead letters) and live workers."""

    async def read(broker: Broker) -> tuple[list[inspection.QueueStatus], list[Any]]:
        chosen = list(queues) or None
        found = await inspection.queues_status(broker.js, chosen, sample=max(0.0, sample))
        return found, await inspection.live_workers(broker.js)

    found, workers = run(nats_url, read)
    if output == "json":
        print_json({"queues": [q.as_json() for q in found],
                     "workers": [w.model_dump(mode="json") for w in workers]})  # fmt: skip
        return
    rows = [
        [q.queue, str(q.waiting), str(q.in_flight), str(q.delayed), str(q.dead_letters),
         "-" if q.rate is None else f"{q.rate:.1f}/s"]
        for q in found
    ]  # fmt: skip
    table("Queues", ["queue", "waiting", "in flight", "delayed", "dead letters", "rate"], rows)
    _workers_table(workers)


def _workers_table(workers: list[Any]) -> None:
    rows = [
        [w.name, ",".join(w.queues), f"{w.pool} x{w.concurrency}", str(w.running),
         str(w.succeeded), str(w.failed), w.state, ago(w.started), ago(w.seen)]
        for w in workers
    ]  # fmt: skip
    columns = ["worker", "queues", "pool", "running", "succeeded", "failed", "state", "up",
               "seen"]  # fmt: skip
    table(f"Workers ({len(workers)})", columns, rows)


@click.group()
def inspect() -> None:
    """Look at live workers: counts, running tasks, registered tasks."""


@inspect.command("workers")
@URL
@OUTPUT
def inspect_workers(nats_url: str | None, output: str) -> None:
    """The workers alive now (from the workers bucket)."""
    workers = run(nats_url, lambda broker: inspection.live_workers(broker.js))
    if output == "json":
        print_json([w.model_dump(mode="json") for w in workers])
    else:
        _workers_table(workers)


@inspect.command("active")
@URL
@OUTPUT
def inspect_active(nats_url: str | None, output: str) -> None:
    """The tasks each live worker runs now (as of its last heartbeat)."""
    workers = run(nats_url, lambda broker: inspection.live_workers(broker.js))
    if output == "json":
        print_json([{"worker": w.name, "running": w.running,
                     "active": [a.model_dump(mode="json") for a in w.active]}
                    for w in workers])  # fmt: skip
        return
    rows = [
        [w.name, a.id or "-", a.task or "-", a.queue, ago(a.started)]
        for w in workers
        for a in w.active
    ]
    unlisted = sum(max(0, w.running - len(w.active)) for w in workers)
    title = f"Active tasks ({sum(w.running for w in workers)})"
    table(title, ["worker", "id", "task", "queue", "running for"], rows)
    if unlisted:
        click.echo(f"... and {unlisted} more not listed (a worker lists at most "
                   f"{MAX_ACTIVE_LISTED})")  # fmt: skip


@inspect.command("registered")
@URL
@OUTPUT
def inspect_registered(nats_url: str | None, output: str) -> None:
    """The task names each live worker has registered."""
    workers = run(nats_url, lambda broker: inspection.live_workers(broker.js))
    if output == "json":
        print_json([{"worker": w.name, "registered": w.registered} for w in workers])
        return
    rows = [[w.name, ", ".join(w.registered) or "-"] for w in workers]
    table(f"Registered tasks ({len(workers)} workers)", ["worker", "tasks"], rows)


@click.command()
@URL
@OUTPUT
@click.argument("task_id")
def result(nats_url: str | None, output: str, task_id: str) -> None:
    """A task's state, result or error, traceback, retries and worker."""
    record: ResultRecord | None = run(
        nats_url, lambda broker: inspection.task_result(broker.js, task_id)
    )
    if output == "json":
        print_json({"id": task_id, **(record.model_dump(mode="json") if record else
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


@click.command()
@URL
@click.argument("task_id")
@click.option("--reason", default="revoked from the command line", show_default=True)
@click.option(
    "--terminate", is_flag=True,
    help="also stop the task if a worker runs it: an async task is cancelled, a processes-pool "
    "child gets --signal; a sync task on a thread cannot be stopped (it ends REVOKED when it "
    "returns)",
)  # fmt: skip
@click.option(
    "-s", "--signal", "signal_name", default="SIGTERM", show_default=True,
    help="with --terminate: SIGTERM (SIGKILL 5 s later if still alive) or SIGKILL",
)  # fmt: skip
def revoke(
    nats_url: str | None, task_id: str, reason: str, terminate: bool, signal_name: str
) -> None:
    """Revoke a task: workers skip it from now on (and stop it, with --terminate)."""
    try:
        stop = terminate_signal(signal_name) if terminate else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--signal") from None

    async def go(broker: Broker) -> None:
        await broker.revocations.revoke(task_id, reason, terminate=stop)

    run(nats_url, go)
    done = f"revoked {task_id}: {reason}"
    click.echo(done if stop is None else f"{done} (terminating it with {stop} if it runs)")


@click.command()
@URL
@click.argument("queue")
@click.option("--yes", is_flag=True, help="do not ask")
def purge(nats_url: str | None, queue: str, yes: bool) -> None:
    """Drop every task waiting in QUEUE (delayed tasks and schedules stay)."""
    if not yes:
        click.confirm(f"Drop every task waiting in queue {queue!r}?", abort=True)
    dropped = run(nats_url, lambda broker: inspection.purge_queue(broker.js, queue))
    click.echo(f"purged {dropped} task(s) from queue {queue}")
