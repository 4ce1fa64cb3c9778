"""What every admin command shares: the NATS URL and output options, a connection
that turns errors into one sentence, JSON and table output."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from celeriac.app import Celeriac
from celeriac.broker import Broker

T = TypeVar("T")

URL = click.option(
    "--nats-url", envvar="CELERIAC_NATS_URL", help="NATS server(s) (default: $CELERIAC_NATS_URL)"
)
OUTPUT = click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)


def run(nats_url: str | None, work: Callable[[Broker], Awaitable[T]]) -> T:
    """Connect, do ``work`` on the broker, disconnect; errors become one sentence."""
    from celeriac.cli import _sentence

    async def go() -> T:
        app = Celeriac("celeriac-admin", nats_url, declare_queues=False, set_as_current=False)
        try:
            return await work(await app.broker())
        finally:
            await app.aclose()

    try:
        return asyncio.run(go())
    except Exception as exc:
        raise click.ClickException(_sentence(exc)) from None


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON (times and other objects as strings)."""
    click.echo(json.dumps(value, indent=2, default=str))


_TEXT_COLUMNS = {"queue", "worker", "queues", "pool", "state", "task", "id", "reason", "error",
                 "ref", "tasks"}  # fmt: skip


def table(title: str, columns: Sequence[str], rows: list[list[str]]) -> None:
    """Print a table: text columns left-aligned, figures right-aligned."""
    shown = Table(title=title, title_justify="left")
    for column in columns:
        shown.add_column(column, justify="left" if column in _TEXT_COLUMNS else "right")
    for row in rows:
        shown.add_row(*row)
    Console().print(shown)


def ago(moment: datetime) -> str:
    """How long ago ``moment`` was, coarsely: 42s, 5m, 3h."""
    seconds = max(0, int((datetime.now(UTC) - moment).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"
