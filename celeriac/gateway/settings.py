"""The gateway's settings: the command line, then the environment (the Helm chart
mounts the tokens document from a Secret and names it in a variable)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from celeriac.gateway.access import Access, AccessError, load

TOKENS_FILE_ENV = "CELERIAC_GATEWAY_TOKENS_FILE"
TOKENS_ENV = "CELERIAC_GATEWAY_TOKENS"
DEFAULT_PORT = 8788
DEFAULT_MAX_BODY = 1024 * 1024
#: The longest ``?wait=`` a result read may hold a request open, in seconds.
MAX_WAIT = 60.0


class SettingsError(ValueError):
    """The settings are unusable; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    """Where to listen and connect, the body limit, and who may come in."""

    nats_url: str | None
    host: str
    port: int
    max_body: int
    access: Access


def _size(text: str) -> int:
    units = {"k": 1024, "ki": 1024, "m": 1024**2, "mi": 1024**2}
    lowered = text.strip().lower().removesuffix("b")
    for suffix, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if lowered.endswith(suffix):
            return int(float(lowered[: -len(suffix)]) * factor)
    return int(lowered)


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``celeriac gateway``."""
    parsed = argparse.ArgumentParser(
        prog="celeriac gateway",
        description="Submit tasks, read results and take signed webhooks over HTTP. "
        f"Tokens and hooks come from the file ${TOKENS_FILE_ENV} (or the document "
        f"${TOKENS_ENV}); see docs/gateway.md.",
    )
    parsed.add_argument(
        "--nats-url", metavar="URL", help="NATS server(s) (default: $CELERIAC_NATS_URL)"
    )
    parsed.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parsed.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to listen on (0: any free port)"
    )
    parsed.add_argument(
        "--max-body", default=str(DEFAULT_MAX_BODY), metavar="BYTES",
        help="largest request body accepted, e.g. 1048576 or 1MiB (default: 1 MiB)",
    )  # fmt: skip
    parsed.add_argument(
        "--tokens-file", metavar="PATH", help=f"the tokens and hooks document (${TOKENS_FILE_ENV})"
    )
    return parsed


def settings_from(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of ``argv`` and ``environ`` (default: this process's environment)."""
    env = os.environ if environ is None else environ
    ns = parser().parse_args(list(argv))
    if not 0 <= ns.port <= 65535:
        raise SettingsError(f"invalid port {ns.port}: use 0-65535")
    try:
        max_body = _size(ns.max_body)
    except (ValueError, OverflowError):
        raise SettingsError(f"--max-body must be a number of bytes, not {ns.max_body!r}") from None
    if max_body < 1024:
        raise SettingsError(f"--max-body must be at least 1024 bytes, not {max_body}")
    path = ns.tokens_file or env.get(TOKENS_FILE_ENV) or None
    inline = env.get(TOKENS_ENV) or None
    if path is None and inline is None:
        raise SettingsError(
            f"no tokens: set {TOKENS_FILE_ENV} to a tokens file (or {TOKENS_ENV} to the "
            "document itself); see docs/gateway.md"
        )
    try:
        access = load(path, inline)
    except AccessError as exc:
        raise SettingsError(str(exc)) from None
    if not access.grants and not access.hooks:
        raise SettingsError("the tokens document defines no tokens and no hooks")
    return Settings(
        nats_url=ns.nats_url or env.get("CELERIAC_NATS_URL") or None,
        host=ns.host, port=ns.port, max_body=max_body, access=access,
    )  # fmt: skip
