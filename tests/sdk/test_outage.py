"""NATS outages seen from the SDK: a bounded first connect, and publish errors that
name the tasks and say they may be stored, so resubmitting the same id runs once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celeriac_devenv.nats import NatsServer
from celeriac_devenv.processes import free_port

from celeriac import broker as broker_module
from celeriac.app import ENV_CONNECT_TIMEOUT, Celeriac
from celeriac.exceptions import BatchPublishError, CeleriacError, PublishError
from celeriac.protocol import names
from celeriac.submitting import prepare
from tests.support import StartWorker, wait_until

# Publishes wait this long for an acknowledgement in these tests (10 s in production).
_PATIENCE = 1.5


def test_connect_timeout_comes_from_the_argument_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV_CONNECT_TIMEOUT, raising=False)
    assert Celeriac("t").connect_timeout == broker_module.DEFAULT_CONNECT_TIMEOUT
    assert Celeriac("t", connect_timeout=0.5).connect_timeout == 0.5
    monkeypatch.setenv(ENV_CONNECT_TIMEOUT, "12.5")
    assert Celeriac("t").connect_timeout == 12.5
    assert Celeriac("t", connect_timeout=2).connect_timeout == 2


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf")])
def test_connect_timeout_must_be_positive(value: float) -> None:
    with pytest.raises(ValueError, match="connect_timeout must be a number of seconds above 0"):
        Celeriac("t", connect_timeout=value)


@pytest.mark.parametrize("value", ["soon", "0", "-3"])
def test_a_bad_connect_timeout_in_the_environment_is_named(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(ENV_CONNECT_TIMEOUT, value)
    with pytest.raises(ValueError, match=ENV_CONNECT_TIMEOUT):
        Celeriac("t")


@pytest.fixture
def nowhere() -> str:
    """A URL nothing listens on."""
    return f"nats://127.0.0.1:{free_port()}"


def test_first_submit_without_nats_fails_after_the_connect_timeout(nowhere: str) -> None:
    app = Celeriac("outage", nowhere, connect_timeout=1.0)
    try:
        started = time.monotonic()
        with pytest.raises(CeleriacError) as info:
            app.send_task("cv.add", [1, 2])
        elapsed = time.monotonic() - started
        assert 1.0 <= elapsed < 5.0
        assert nowhere in str(info.value) and "tried for 1 s" in str(info.value)
        assert "ConnectionRefusedError" in str(info.value)
    finally:
        app.close()


async def test_first_get_without_nats_fails_after_the_connect_timeout(nowhere: str) -> None:
    app = Celeriac("outage", nowhere, connect_timeout=0.5)
    try:
        with pytest.raises(CeleriacError, match=r"cannot connect to NATS at .* tried for 0\.5 s"):
            await app.AsyncResult("some-id").aget(timeout=1)
    finally:
        await app.aclose()


def test_the_password_is_not_shown(nowhere: str) -> None:
    url = nowhere.replace("//", "//user:s3cret@")
    app = Celeriac("outage", url, connect_timeout=0.2)
    try:
        with pytest.raises(CeleriacError) as info:
            app.send_task("cv.add", [1, 2])
        assert "s3cret" not in str(info.value) and "user:***@" in str(info.value)
    finally:
        app.close()


async def test_a_later_call_connects_once_nats_is_up(private_nats: NatsServer, queue: str) -> None:
    private_nats.stop()
    app = Celeriac("outage", private_nats.url, default_queue=queue, connect_timeout=0.5)
    try:
        with pytest.raises(CeleriacError, match="cannot connect"):
            await app.asend_task("cv.add", [1, 2])
        private_nats.start()
        result = await app.asend_task("cv.add", [1, 2])
        assert await result.astate() == "PENDING"
    finally:
        await app.aclose()


def test_a_later_blocking_call_connects_once_nats_is_up(
    private_nats: NatsServer, queue: str
) -> None:
    private_nats.stop()
    app = Celeriac("outage", private_nats.url, default_queue=queue, connect_timeout=0.5)
    try:
        with pytest.raises(CeleriacError, match="cannot connect"):
            app.send_task("cv.add", [1, 2])
        private_nats.start()
        assert app.send_task("cv.add", [1, 2]).state == "PENDING"
    finally:
        app.close()


@pytest.fixture
def short_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    """Brokers made from now on give up on an acknowledgement after ``_PATIENCE`` s."""
    monkeypatch.setattr(broker_module, "PUBLISH_TIMEOUT", _PATIENCE)


@pytest.fixture
def outage_app(private_nats: NatsServer, queue: str, short_patience: None) -> Iterator[Celeriac]:
    """An app on the private server, connected and with its queue declared."""
    app = Celeriac("outage", private_nats.url, default_queue=queue)
    app.send_task("cv.add", [0, 0])  # connects and declares the queue
    yield app
    app.close()


def _stream_messages(app: Celeriac, queue: str) -> tuple[int, int]:
    """(messages ever stored, messages still waiting) in the queue's work stream."""

    async def look() -> tuple[int, int]:
        broker = await app.broker()
        info = await broker.js.stream_info(names.stream_name(queue))
        return info.state.last_seq, info.state.messages

    return app.client.run_sync(look, call="test", twin="test")


def _connected(app: Celeriac) -> bool:
    """Whether the app's blocking-call connection is up (again)."""

    async def look() -> bool:
        return (await app.broker()).nc.is_connected

    return app.client.run_sync(look, call="test", twin="test")


def _runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_a_task_submitted_during_an_outage_runs_once_after_a_resubmit(
    outage_app: Celeriac,
    private_nats: NatsServer,
    queue: str,
    start_worker: StartWorker,
    tmp_path: Path,
) -> None:
    log = tmp_path / "runs.log"
    private_nats.stop()
    with pytest.raises(PublishError) as info:
        outage_app.send_task("cv.total", [[20, 22]], {"log": str(log)}, task_id="order-42")
    error = info.value
    assert error.task_ids == ["order-42"]
    assert isinstance(error.errors["order-42"], TimeoutError)
    text = str(error)
    assert "order-42 may not have been enqueued" in text
    assert f"within {_PATIENCE:g} s" in text and "may still have been stored" in text
    assert "same task_id is safe" in text and "duplicate window (2 minutes" in text

    private_nats.start()
    wait_until(lambda: _connected(outage_app), timeout=10, what="the app to reconnect")
    result = outage_app.send_task("cv.total", [[20, 22]], {"log": str(log)}, task_id="order-42")
    start_worker(queue, url=private_nats.url)
    assert result.get(timeout=30) == 42
    # The buffered publish was stored on reconnect; the resubmit was dropped as a duplicate.
    wait_until(
        lambda: _stream_messages(outage_app, queue) == (2, 0),
        timeout=15,
        what="both messages handled",
    )
    assert _runs(log) == 1


def test_a_batch_submitted_during_an_outage_names_every_task(
    outage_app: Celeriac, private_nats: NatsServer, queue: str, start_worker: StartWorker
) -> None:
    ids = [f"batch-{i}" for i in range(21)]
    signatures = [outage_app.signature("cv.add", [i, 1], task_id=ids[i]) for i in range(21)]
    private_nats.stop()
    with pytest.raises(BatchPublishError) as info:
        outage_app.send_many(signatures)
    error = info.value
    assert isinstance(error, PublishError) and error.failed is error.errors
    assert error.task_ids == ids
    text = str(error)
    assert "21 of 21 task(s) not confirmed as enqueued: 21 tasks may or may not have" in text
    assert "batch-0: no acknowledgement from JetStream within" in text
    assert "same task ids is safe" in text and "duplicate window (2 minutes" in text

    private_nats.start()
    wait_until(lambda: _connected(outage_app), timeout=10, what="the app to reconnect")
    results = outage_app.send_many(signatures)  # all deduplicated against the buffered ones
    start_worker(queue, url=private_nats.url)
    assert [r.get(timeout=30) for r in results] == [i + 1 for i in range(21)]
    assert _stream_messages(outage_app, queue)[0] == 1 + 21


def test_the_worker_side_publish_keeps_the_nats_error(
    outage_app: Celeriac, private_nats: NatsServer, queue: str
) -> None:
    """The worker retries a chain step on nats-py's TimeoutError; only submits wrap it."""
    item = prepare("cv.add", [1, 2], None, {}, call="test", default_queue=queue)

    async def publish() -> None:
        await (await outage_app.broker()).publish_task(item.message)

    private_nats.stop()
    with pytest.raises(TimeoutError) as info:
        outage_app.client.run_sync(publish, call="test", twin="test")
    assert not isinstance(info.value, CeleriacError)
