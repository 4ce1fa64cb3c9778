"""``celeriac status | inspect | result | revoke | purge | dlq | ...``: see and steer the queues.

Every command reads what JetStream stores (``celeriac.inspection``) from any NATS
URL, with or without Kubernetes; ``-o json`` prints the same as JSON for scripts.
Mistakes and outages are one plain sentence on stderr and exit status 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from celeriac.admin import commands, deadletters, events


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """See and steer Celeriac's queues, workers and tasks."""


for command in (commands.status, commands.inspect, commands.result, commands.revoke,
                commands.purge, deadletters.dead_letters, events.events):  # fmt: skip
    cli.add_command(command)


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
