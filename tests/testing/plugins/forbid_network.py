"""A pytest plugin failing the run when anything opens a TCP or UDP connection.

Loaded with ``-p forbid_network`` (this folder on ``PYTHONPATH``), it proves a suite
needs no nats-server: a connect to any host and port raises ``ConnectionRefusedError``
naming it, and the run fails at the end even if the code under test swallowed the
error. Unix sockets (the event loop's own) are left alone.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

_NETWORK = (socket.AF_INET, socket.AF_INET6)
attempts: list[str] = []


def _guard(original: Callable[..., Any]) -> Callable[..., Any]:
    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in _NETWORK:
            attempts.append(repr(address))
            raise ConnectionRefusedError(f"network use is forbidden in this run: {address!r}")
        return original(self, address)

    return connect


def pytest_configure(config: pytest.Config) -> None:
    socket.socket.connect = _guard(socket.socket.connect)  # type: ignore[method-assign]
    socket.socket.connect_ex = _guard(socket.socket.connect_ex)  # type: ignore[method-assign]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if attempts:
        terminalreporter.write_line(f"FORBIDDEN NETWORK USE: {', '.join(attempts)}", red=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if attempts:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
