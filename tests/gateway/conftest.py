"""Fixtures for the gateway: a tokens document, ``celeriac gateway`` as a subprocess
(and in process, for the table tests), workers running ``gwtasks``."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from celeriac_devenv.processes import ManagedProcess, spawn

from celeriac.app import Celeriac
from celeriac.broker import Broker
from celeriac.protocol import names
from tests.support import WorkerApp, wait_until

REPO = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
GATEWAY_ENV = ("CELERIAC_GATEWAY_TOKENS_FILE", "CELERIAC_GATEWAY_TOKENS")


@dataclass(frozen=True)
class Tokens:
    """The tokens document of a test: a token for every queue, one for ``queue`` only,
    and the hook ``orders`` (task ``hooks.receive`` on ``hook_queue``)."""

    path: Path
    all: str
    limited: str
    queue: str
    hook_queue: str
    hook_secret: str

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


def write_tokens(directory: Path, queue: str, hook_queue: str) -> Tokens:
    """Write a tokens document (JSON) into ``directory``."""
    every, limited = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    document = {
        "tokens": {every: "*", limited: [queue]},
        "hooks": {"orders": {"task": "hooks.receive", "queue": hook_queue, "secret": secret,
                             "headers": ["X-Shop-Event"]}},
    }  # fmt: skip
    path = directory / "gateway-tokens.json"
    path.write_text(json.dumps(document))
    return Tokens(path, every, limited, queue, hook_queue, secret)


@pytest.fixture
def worker_app() -> WorkerApp:
    """Workers run ``gwtasks`` (tasks.add, tasks.sleep, hooks.receive)."""
    return WorkerApp("gwtasks", APPS)


@pytest.fixture
def queue() -> str:
    """A queue name of this test's own."""
    return f"gq-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def tokens(tmp_path: Path, queue: str) -> Tokens:
    """The tokens document of this test."""
    return write_tokens(tmp_path, queue, f"{queue}-hooks")


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[Celeriac]:
    """An SDK app to declare queues and look at streams."""
    app = Celeriac("gateway-tests-client", nats_url=nats_url)
    yield app
    await app.aclose()


@pytest.fixture
async def broker(client: Celeriac) -> Broker:
    """The client's broker on this test's loop."""
    return await client.broker()


async def stored(broker: Broker, queue: str) -> int:
    """How many messages ``queue``'s work stream holds."""
    info = await broker.js.stream_info(names.stream_name(queue))
    return int(info.state.messages)


@dataclass
class Gateway:
    """A ``celeriac gateway`` subprocess and the address it printed."""

    process: ManagedProcess
    url: str


StartGateway = Callable[..., Gateway]


def gateway_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without the gateway's variables, plus ``extra``."""
    environ = {k: v for k, v in os.environ.items() if k not in GATEWAY_ENV}
    environ.update(extra)
    return environ


@pytest.fixture
def start_gateway(tmp_path: Path, nats_url: str) -> Iterator[StartGateway]:
    """Start ``celeriac gateway --port 0``; every one started is stopped afterwards."""
    started: list[ManagedProcess] = []

    def start(*argv: str, env: Mapping[str, str] | None = None, url: str | None = None) -> Gateway:
        environ = gateway_env({"CELERIAC_NATS_URL": url or nats_url, **(env or {})})
        process = spawn(
            f"gateway-{len(started) + 1}",
            [sys.executable, "-m", "celeriac", "gateway", "--port", "0", *argv],
            log_dir=tmp_path, env=environ, cwd=REPO,
        )  # fmt: skip
        started.append(process)

        def address() -> str | None:
            found = re.search(r"celeriac gateway on (http://\S+)/", process.log_path.read_text())
            return found.group(1) if found else None

        address_url = wait_until(address, timeout=30, what="the gateway's address", alive=process)
        return Gateway(process, address_url)

    yield start
    for process in started:
        process.stop(grace=5)


@pytest.fixture
async def http(start_gateway: StartGateway, tokens: Tokens) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client (keep-alive) on a gateway subprocess using ``tokens``."""
    gateway = start_gateway(env={"CELERIAC_GATEWAY_TOKENS_FILE": str(tokens.path)})
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as session:
        yield session


def problem(response: httpx.Response) -> dict[str, Any]:
    """The problem details of ``response`` (checks the media type)."""
    assert response.headers["content-type"] == "application/problem+json", response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    assert body["title"] and body["detail"] and body["type"]
    return body
