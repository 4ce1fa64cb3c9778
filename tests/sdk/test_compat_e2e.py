"""Celery spellings against a real nats-server and worker: shared tasks, exceptions
caught by their own type, ``forget``, ``date_done``, ``info``, ``GroupResult.join``."""

from __future__ import annotations

import decimal
from datetime import UTC, datetime, timedelta

import pytest

from celeriac.app import Celeriac
from celeriac.async_result import AsyncResult, GroupResult
from celeriac.canvas import chain, group
from celeriac.exceptions import ImproperlyConfigured, TaskError
from celeriac.protocol.states import TaskState
from celeriac.shared import shared_task
from tests.support import StartWorker, WorkerApp

from .conftest import APPS

pytestmark = pytest.mark.integration


@pytest.fixture
def worker_app(queue: str) -> WorkerApp:
    """Workers here run ``sdk_compat_tasks``, whose default queue is the test's."""
    return WorkerApp("sdk_compat_tasks", APPS, env={"SDK_E2E_QUEUE": queue})


# The caller's side of the worker's shared task: same name, registered in every app.
@shared_task(name="compat.shared_add")
def shared_add(a: int, b: int) -> int:
    return a + b


@shared_task(name="compat.whoami", bind=True)
def whoami(self: object, tag: str) -> list[str]:
    raise AssertionError("runs on the worker only")


def test_shared_tasks_run_on_a_worker(app: Celeriac, queue: str, start_worker: StartWorker) -> None:
    start_worker(queue)
    # The fixture's app is the newest, so the current one: no app named anywhere.
    result = shared_add.delay(2, 3)
    assert isinstance(result, AsyncResult) and result.client is app.client
    assert result.get(timeout=30) == 5
    bound = whoami.apply_async(("hi",), task_id="compat-whoami-1")
    assert bound.get(timeout=30) == ["compat-whoami-1", "hi", "sdk-compat"]
    # A handle made from the id alone, as in Celery.
    assert AsyncResult(result.id).get(timeout=5) == 5
    assert shared_add.AsyncResult(result.id).result == 5


def test_except_value_error_around_get(app: Celeriac, start_worker: StartWorker) -> None:
    start_worker(app.default_queue)
    result = app.send_task("compat.fail", ("value", "bad input"))
    with pytest.raises(ValueError, match="bad input") as caught:
        result.get(timeout=30)
    error = caught.value
    assert isinstance(error, TaskError) and error.task_id == result.id
    assert (error.exc_type, error.exc_module) == ("ValueError", "builtins")
    assert error.traceback is not None and "raise FAILURES[kind](message)" in error.traceback
    with pytest.raises(KeyError) as missing:
        app.send_task("compat.fail", ("key", "sku-7")).wait(timeout=30)
    assert missing.value.args == ("sku-7",)
    # Without propagate, result and info hold the same kind of exception.
    assert isinstance(result.result, ValueError) and isinstance(result.info, ValueError)
    assert isinstance(result.get(timeout=5, propagate=False), ValueError)


def test_exceptions_of_allowed_modules(
    app: Celeriac, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_worker(app.default_queue)
    monkeypatch.syspath_prepend(str(APPS))
    custom = app.send_task("compat.fail", ("custom", "sku 7 sold out"))
    money = app.send_task("compat.fail", ("decimal", "bad amount"))
    broken_json = app.send_task("compat.fail", ("json", "{not json"))
    # Not allowed yet: a TaskError named after the remote type.
    with pytest.raises(TaskError, match="OutOfStockError: sku 7 sold out") as off_list:
        custom.get(timeout=30)
    assert type(off_list.value).__name__ == "OutOfStockError"
    app.conf.result_exception_modules = ["sdk_compat_errors", "decimal", "json"]
    from sdk_compat_errors import OutOfStockError  # type: ignore[import-not-found]

    with pytest.raises(OutOfStockError, match="sku 7 sold out"):
        custom.get(timeout=30)
    with pytest.raises(decimal.InvalidOperation, match="bad amount"):
        money.get(timeout=30)
    # Allowed, but JSONDecodeError needs more than a message to be built: a TaskError.
    with pytest.raises(TaskError, match="JSONDecodeError: Expecting property name") as kept:
        broken_json.get(timeout=30)
    assert type(kept.value).__name__ == "JSONDecodeError"
    assert kept.value.exc_module == "json.decoder"


def test_a_failed_chain_raises_the_steps_exception(
    app: Celeriac, start_worker: StartWorker
) -> None:
    start_worker(app.default_queue)
    flow = chain(
        shared_add.s(1, 2),
        app.signature("compat.fail", ("value", "step two"), immutable=True),
        shared_add.s(10),
    )
    with pytest.raises(ValueError, match=r"earlier chain step .* failed: ValueError: step two"):
        flow.delay().get(timeout=30)


def test_forget_and_date_done(app: Celeriac, start_worker: StartWorker) -> None:
    start_worker(app.default_queue)
    before = datetime.now(UTC)
    result = shared_add.delay(20, 22)
    assert result.get(timeout=30) == 42 and result.info == 42
    done = result.date_done
    assert done is not None and before - timedelta(seconds=5) <= done <= datetime.now(UTC)
    assert result.children == []
    result.forget()
    assert result.state is TaskState.PENDING and result.record() is None
    assert result.date_done is None and result.result is None and result.info is None
    result.forget()  # forgetting twice is fine


def test_group_join_restore_and_children(app: Celeriac, start_worker: StartWorker) -> None:
    start_worker(app.default_queue)
    sent = group(shared_add.s(i, i) for i in range(5)).delay()
    assert isinstance(sent, GroupResult)
    assert sent.join(timeout=30) == [0, 2, 4, 6, 8]
    restored = GroupResult.restore(sent.id)  # the current app's
    assert restored is not None and restored.join(timeout=5) == [0, 2, 4, 6, 8]
    assert app.GroupResult.restore(sent.id) is not None
    assert [r.id for r in AsyncResult(sent.id).children] == [r.id for r in sent.results]
    # A group built by hand is stored with save().
    by_hand = GroupResult("compat-by-hand", [r.id for r in sent.results[:2]])
    by_hand.save()
    again = GroupResult.restore("compat-by-hand", app)
    assert again is not None and again.join(timeout=5) == [0, 2]
    sent.forget()
    assert GroupResult.restore(sent.id) is None
    assert all(r.state is TaskState.PENDING for r in sent.results)


def test_connection_settings_are_fixed_once_connected(app: Celeriac, queue: str) -> None:
    app.conf.broker_connection_timeout = 3  # not connected yet: fine
    assert app.send_task("compat.shared_add", (1, 1)).state is TaskState.PENDING
    with pytest.raises(ImproperlyConfigured, match="broker_url cannot change after the app"):
        app.conf.broker_url = "nats://elsewhere:4222"
    with pytest.raises(ImproperlyConfigured, match="result_expires cannot change"):
        app.conf.update(result_expires=5, timezone="Asia/Tokyo")
    assert app.conf.timezone == "UTC"  # refused as a whole
    app.conf.broker_url = app.nats_url  # the same value is no change
    app.conf.task_default_queue = f"{queue}-b"  # not a connection setting
    app.close()
    app.conf.broker_url = app.nats_url.replace("127.0.0.1", "localhost")
    assert app.send_task("compat.shared_add", (1, 1)).state is TaskState.PENDING
