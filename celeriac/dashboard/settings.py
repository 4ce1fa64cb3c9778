"""The dashboard's settings: the command line, then the environment (the Helm chart
passes credentials from a Secret as variables)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TOKEN_ENV = "CELERIAC_DASHBOARD_TOKEN"
USERNAME_ENV = "CELERIAC_DASHBOARD_USERNAME"
PASSWORD_ENV = "CELERIAC_DASHBOARD_PASSWORD"
READ_ONLY_ENV = "CELERIAC_DASHBOARD_READ_ONLY"
DEFAULT_PORT = 8787
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class SettingsError(ValueError):
    """The settings contradict each other; the message says how."""


@dataclass(frozen=True)
class Credentials:
    """Who may see the dashboard: a bearer token, a user and password, either, or anyone."""

    token: str | None = None
    username: str | None = None
    password: str | None = None

    @property
    def open(self) -> bool:
        """True when no credential is configured: every request is let in."""
        return self.token is None and self.username is None


@dataclass(frozen=True)
class Settings:
    """Where to listen and connect, who may look, and whether they may change anything."""

    nats_url: str | None
    host: str
    port: int
    read_only: bool
    credentials: Credentials

    @property
    def exposed_without_auth(self) -> bool:
        """Open to anyone on a non-loopback address (worth a warning)."""
        return self.credentials.open and self.host not in LOOPBACK


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``celeriac dashboard``."""
    parsed = argparse.ArgumentParser(
        prog="celeriac dashboard",
        description="Serve a live web page of the queues, workers, tasks and dead letters. "
        f"Auth from ${TOKEN_ENV} (bearer token) or ${USERNAME_ENV} + ${PASSWORD_ENV} "
        "(basic auth); neither: open.",
    )
    parsed.add_argument(
        "--nats-url", metavar="URL", help="NATS server(s) (default: $CELERIAC_NATS_URL)"
    )
    parsed.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parsed.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to listen on (0: any free port)"
    )
    parsed.add_argument(
        "--read-only",
        action="store_true",
        help=f"no replay, purge or revoke (also ${READ_ONLY_ENV}=1)",
    )
    return parsed


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def settings_from(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of ``argv`` and ``environ`` (default: this process's environment)."""
    env = os.environ if environ is None else environ
    ns = parser().parse_args(list(argv))
    token = env.get(TOKEN_ENV) or None
    username = env.get(USERNAME_ENV) or None
    password = env.get(PASSWORD_ENV) or None
    if (username is None) != (password is None):
        missing = PASSWORD_ENV if password is None else USERNAME_ENV
        raise SettingsError(f"basic auth needs both {USERNAME_ENV} and {PASSWORD_ENV}: "
                            f"{missing} is not set")  # fmt: skip
    if username is not None and ":" in username:
        raise SettingsError(f"{USERNAME_ENV} must not contain ':' (basic auth splits on it)")
    if not 0 <= ns.port <= 65535:
        raise SettingsError(f"invalid port {ns.port}: use 0-65535")
    return Settings(
        nats_url=ns.nats_url or env.get("CELERIAC_NATS_URL") or None,
        host=ns.host,
        port=ns.port,
        read_only=ns.read_only or _flag(env.get(READ_ONLY_ENV)),
        credentials=Credentials(token=token, username=username, password=password),
    )
