"""Session fixtures: the real servers every integration and e2e test runs against."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.devenv.nats import NatsServer, remove_workdir, start_nats


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server with JetStream shared by the whole session."""
    server = start_nats(Path(tmp_path_factory.mktemp("nats")))
    yield server
    server.stop()
    remove_workdir(server)


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    """URL of the session's nats-server."""
    return nats_server.url


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test's own, for tests that restart or break it."""
    server = start_nats(tmp_path / "nats")
    yield server
    server.stop()
