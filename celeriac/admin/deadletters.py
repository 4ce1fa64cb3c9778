"""``celeriac dlq list | show | replay | purge``: the dead letters, without the nats CLI."""

from __future__ import annotations

import json

import click

from celeriac import dlq
from celeriac.admin.terminal import OUTPUT, URL, ago, print_json, run, table
from celeriac.broker import Broker
from celeriac.protocol.envelope import DeadLetterReason

REASON = click.option(
    "--reason",
    type=click.Choice([r.value for r in DeadLetterReason]),
    help="only letters dead-lettered for this reason",
)
QUEUE = click.option("-Q", "--queue", help="only this queue (default: every queue)")
TASK = click.option("--task", help="only letters of this task name")
# How much of an error a table row shows.
_CLIP = 60
# Letters one ``dlq replay`` without refs takes at most; run it again for the rest.
REPLAY_LIMIT = 1000


def _clip(text: str, width: int = _CLIP) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


@click.group("dlq")
def dead_letters() -> None:
    """See, replay and purge dead letters."""


@dead_letters.command("list")
@URL
@OUTPUT
@QUEUE
@TASK
@REASON
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, dlq.SCAN_LIMIT))
def list_letters(
    *,
    nats_url: str | None,
    output: str,
    queue: str | None,
    task: str | None,
    reason: str | None,
    limit: int,
) -> None:
    """The newest dead letters, newest first."""
    found = run(
        nats_url,
        lambda broker: dlq.list_dead_letters(
            broker.js, queue, task=task, reason=reason, limit=limit
        ),
    )
    if output == "json":
        print_json([entry.as_json() for entry in found])
        return
    rows = [
        [e.ref, e.queue, e.letter.task or "-", e.letter.task_id or "-", e.letter.reason.value,
         str(e.letter.deliveries), ago(e.stored), _clip(e.letter.error)]
        for e in found
    ]  # fmt: skip
    columns = ["ref", "queue", "task", "id", "reason", "deliveries", "when", "error"]
    table(f"Dead letters ({len(found)})", columns, rows)


@dead_letters.command("show")
@URL
@OUTPUT
@click.argument("ref")
def show(nats_url: str | None, output: str, ref: str) -> None:
    """Everything in one letter; REF is QUEUE:SEQUENCE (from `dlq list`) or a task id."""
    entry = run(nats_url, lambda broker: dlq.find_dead_letter(broker.js, ref))
    if entry is None:
        raise click.ClickException(f"no dead letter {ref!r} (give QUEUE:SEQUENCE or a task id)")
    if output == "json":
        print_json(entry.as_json())
        return
    letter = entry.letter
    click.echo(f"{entry.ref}: {letter.reason.value}")
    details = {
        "queue": entry.queue, "task": letter.task, "id": letter.task_id,
        "stored": entry.stored.isoformat(), "failed at": letter.failed_at.isoformat(),
        "worker": letter.worker, "deliveries": letter.deliveries,
        "stream sequence": letter.stream_sequence, "error": letter.error,
    }  # fmt: skip
    for key, value in details.items():
        if value not in (None, ""):
            click.echo(f"  {key}: {value}")
    for key, value in letter.original_headers.items():
        click.echo(f"  header {key}: {value}")
    if letter.traceback:
        click.echo(letter.traceback.rstrip())
    size = letter.original_size if letter.original_size is not None else len(letter.original)
    notes = [f"{size} bytes", letter.original_encoding]
    if letter.original_truncated:
        notes.append(f"truncated, sha256 {letter.original_sha256}")
    click.echo(f"original ({', '.join(notes)}):")
    click.echo(_pretty(letter.original) if letter.original_encoding == "utf-8" else letter.original)


def _pretty(text: str) -> str:
    """``text`` indented when it is JSON, else as it is."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


_SAID = {
    dlq.ReplayOutcome.REPLAYED: "replayed",
    dlq.ReplayOutcome.WOULD_REPLAY: "would replay",
    dlq.ReplayOutcome.SKIPPED: "skipped",
}


@dead_letters.command("replay")
@URL
@click.argument("refs", nargs=-1)
@QUEUE
@TASK
@REASON
@click.option("--dry-run", is_flag=True, help="say what would be replayed; change nothing")
@click.option("--yes", is_flag=True, help="do not ask")
def replay(
    *,
    nats_url: str | None,
    refs: tuple[str, ...],
    queue: str | None,
    task: str | None,
    reason: str | None,
    dry_run: bool,
    yes: bool,
) -> None:
    """Send dead-lettered tasks again: the REFS given, else every letter the filters
    select (after asking, unless --yes or --dry-run)."""

    if refs and (queue or task or reason):
        raise click.UsageError("give dead-letter refs or filters (-Q, --task, --reason), not both")

    async def select(broker: Broker) -> list[dlq.DeadLetterEntry]:
        if not refs:
            return await dlq.list_dead_letters(
                broker.js, queue, task=task, reason=reason, limit=REPLAY_LIMIT
            )
        found = []
        for ref in refs:
            entry = await dlq.find_dead_letter(broker.js, ref)
            if entry is None:  # a ValueError: ``run`` prints it as the sentence it is
                raise ValueError(f"no dead letter {ref!r} (give QUEUE:SEQUENCE or a task id)")
            found.append(entry)
        return found

    chosen = run(nats_url, select)
    if not chosen:
        click.echo("no dead letters to replay")
        return
    if not (refs or yes or dry_run):
        click.confirm(f"Replay {len(chosen)} dead letter(s)?", abort=True)
    done = run(
        nats_url,
        lambda broker: dlq.replay(broker.js, chosen, dry_run=dry_run, keys=broker.signing_keys),
    )
    for item in done:
        what = f"{_SAID[item.outcome]} {item.entry.ref} ({item.entry.letter.task or '-'}"
        what += f", id {item.task_id})" if item.task_id else ")"
        click.echo(f"{what}: {item.why}" if item.why else what)
    sent = dlq.ReplayOutcome.WOULD_REPLAY if dry_run else dlq.ReplayOutcome.REPLAYED
    count = sum(1 for d in done if d.outcome is sent)
    click.echo(f"{count} {_SAID[sent]}, {len(done) - count} skipped")


@dead_letters.command("purge")
@URL
@QUEUE
@click.option("--yes", is_flag=True, help="do not ask")
def purge(nats_url: str | None, queue: str | None, yes: bool) -> None:
    """Delete the dead letters of one queue, or of every queue."""
    if not yes:
        where = f"queue {queue!r}" if queue else "every queue"
        click.confirm(f"Delete every dead letter of {where}?", abort=True)
    purged = run(nats_url, lambda broker: dlq.purge_dead_letters(broker.js, queue))
    click.echo(f"purged {purged} dead letter(s)" + (f" from queue {queue}" if queue else ""))
