"""NATS that requires TLS and a user/password: the SDK and workers connect with a
Secret-like directory; a refusal is told at once and plainly, never as an outage, and
a worker refused its credentials stays up, unready, until the files are corrected."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from celeriac_devenv.nats import NatsServer

from celeriac import Celeriac, NatsAuth, NatsRefusedError
from tests.support import StartWorker, wait_until

pytestmark = pytest.mark.integration


def _secret(server: NatsServer) -> Path:
    assert server.security is not None
    return server.security.client_dir


def _copy(server: NatsServer, tmp_path: Path, **changes: str) -> Path:
    """The server's client directory, copied, with some files replaced or removed."""
    copy = tmp_path / "secret"
    shutil.copytree(_secret(server), copy)
    for name, text in changes.items():
        if text:
            (copy / name).write_text(text)
        else:
            (copy / name).unlink()
    return copy


async def test_tasks_run_over_tls_with_a_password(
    secure_nats: NatsServer, start_worker: StartWorker, queue: str
) -> None:
    secret = _secret(secure_nats)
    start_worker(queue, url=secure_nats.url, env={"CELERIAC_NATS_AUTH_DIR": str(secret)})
    app = Celeriac("secure", secure_nats.url, nats_auth=NatsAuth.from_directory(secret))
    try:
        result = await app.asend_task("w.aadd", args=[2, 3], queue=queue)
        assert await result.aget(timeout=30) == 5
    finally:
        await app.aclose()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"password": "wrong"}, "credentials were refused"),
        ({"user": "", "password": ""}, "credentials were refused"),
        ({"ca.crt": ""}, "TLS certificate is not trusted"),
    ],
    ids=["wrong-password", "no-credentials", "unknown-ca"],
)
async def test_a_refusal_fails_at_once_and_says_why(
    secure_nats: NatsServer, tmp_path: Path, changes: dict[str, str], reason: str
) -> None:
    auth = NatsAuth.from_directory(_copy(secure_nats, tmp_path, **changes))
    app = Celeriac("refused", secure_nats.url, nats_auth=auth, connect_timeout=20)
    started = time.monotonic()
    try:
        with pytest.raises(NatsRefusedError, match=reason) as caught:
            await app.broker()
    finally:
        await app.aclose()
    # Refused on the first answer, not after the 20 s connect timeout.
    assert time.monotonic() - started < 10
    assert "wrong" not in str(caught.value)  # no secret in the message


async def test_a_refused_worker_stays_up_unready_until_the_secret_is_fixed(
    secure_nats: NatsServer, start_worker: StartWorker, queue: str, tmp_path: Path
) -> None:
    secret = _copy(secure_nats, tmp_path, password="wrong")
    worker = start_worker(
        queue, url=secure_nats.url, env={"CELERIAC_NATS_AUTH_DIR": str(secret)}, wait=False
    )

    def refused() -> str | None:
        try:
            status, body = worker.get("/readyz")
        except OSError:
            return None
        return body if status == 503 and "refused" in body else None

    body = wait_until(refused, timeout=30, what="readyz to say NATS refused the worker")
    assert "credentials were refused" in body
    assert worker.get("/healthz")[0] == 200  # alive: the kubelet does not restart it
    wait_until(lambda: "trying again every" in worker.log(), timeout=10, what="the refusal logged")
    # The log says it once, not once per attempt, and never shows the password.
    assert worker.log().count("refused the connection") == 1, worker.log()
    assert "wrong" not in worker.log()

    # The Secret is corrected (as a mounted Secret's files are updated): the next attempt
    # connects, without a restart.
    shutil.copy(_secret(secure_nats) / "password", secret / "password")
    worker.wait_ready(timeout=30)
    assert worker.process.alive()
    app = Celeriac("fixed", secure_nats.url, nats_auth=NatsAuth.from_directory(secret))
    try:
        result = await app.asend_task("w.aadd", args=[1, 1], queue=queue)
        assert await result.aget(timeout=30) == 2
    finally:
        await app.aclose()
