"""Celeriac's own processes make apps of their own (the gateway, the dashboard, the
admin commands): none of them may take over as the user's current app."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import click
import pytest

from celeriac import current
from celeriac.app import Celeriac

UNREACHABLE = "nats://127.0.0.1:1"


def _cli() -> Any:
    from celeriac.cli import _command_app

    return _command_app(argparse.Namespace(app_spec=None, nats_url=UNREACHABLE))


def _gateway() -> Any:
    from celeriac.gateway.app import Gateway

    return Gateway(SimpleNamespace(access=None, nats_url=UNREACHABLE), metrics=None)  # type: ignore[arg-type]


def _dashboard() -> Any:
    from celeriac.dashboard.app import Backend

    return Backend(SimpleNamespace(nats_url=UNREACHABLE))  # type: ignore[arg-type]


def _admin() -> Any:
    from celeriac.admin.terminal import run

    async def work(broker: Any) -> None:
        raise AssertionError("NATS is not reachable here")

    with pytest.raises(click.ClickException):
        run(UNREACHABLE, work)


@pytest.fixture
def users_app() -> Iterator[Celeriac]:
    app = Celeriac("users-app", UNREACHABLE)
    previous = current.get_current()
    app.set_current()
    yield app
    app.close()
    current.set_current(previous)


@pytest.mark.parametrize(
    "make", [_cli, _gateway, _dashboard, _admin], ids=["cli", "gateway", "dashboard", "admin"]
)
def test_internal_apps_leave_the_current_app_alone(
    users_app: Celeriac, make: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELERIAC_CONNECT_TIMEOUT", "0.5")
    made = make()
    assert current.get_current() is users_app
    app = getattr(made, "celeriac", made)
    if isinstance(app, Celeriac):
        app.close()
