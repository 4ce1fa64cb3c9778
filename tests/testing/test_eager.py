"""Eager mode: tasks run in-process when submitted, through the worker's own handling."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac, TaskError, chain, chord, group
from celeriac.exceptions import MaxRetriesExceededError, TaskRevokedError
from celeriac.protocol.envelope import DeadLetterReason
from celeriac.protocol.states import TaskState
from celeriac.testing import MemoryWorker, eager, worker_of

app = Celeriac("eager-tests", default_queue="eager")
# How many times each task function ran, by name (reset per test).
calls: dict[str, int] = {}
_lock = threading.Lock()


def ran(name: str) -> int:
    with _lock:
        calls[name] = calls.get(name, 0) + 1
        return calls[name]


class FlakyError(ConnectionError):
    """The error the flaky task retries on."""


@app.task
def add(a: int, b: int) -> int:
    ran("add")
    return a + b


@app.task
def total(values: list[int]) -> int:
    return sum(values)


@app.task
async def slow_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@app.task(autoretry_for=(FlakyError,), max_retries=2, retry_backoff=True)
def always_flaky() -> None:
    ran("always_flaky")
    raise FlakyError("the card service did not answer")


@app.task(autoretry_for=(FlakyError,), max_retries=5)
def flaky_twice() -> str:
    if ran("flaky_twice") <= 2:
        raise FlakyError("not yet")
    return "charged"


@app.task(autoretry_for=(FlakyError,))
def wrong_input() -> None:
    ran("wrong_input")
    raise ValueError("quantity must be >= 1")


@app.task(bind=True, max_retries=3)
def retries_itself(self: Any) -> int:
    if self.request.retries < 2:
        self.retry(countdown=3600)  # an hour: eager mode does not wait for it
    return int(self.request.retries)


@app.task(bind=True, max_retries=1)
def retries_forever(self: Any) -> None:
    ran("retries_forever")
    self.retry(countdown=1)


@app.task
def returns_a_set() -> Any:
    return {1, 2}


@app.task
def places_order(n: int) -> int:
    # A task submitting a task: in eager mode the inner one runs before delay() returns.
    return int(add.delay(n, 1).get(timeout=5)) * 10


@app.task(bind=True)
def lineage(self: Any) -> list[str | None]:
    return [self.request.id, self.request.parent_id, self.request.root_id]


@app.task(bind=True)
def family(self: Any) -> list[list[str | None]]:
    """Its own lineage, its child's, and its grandchild's (sent by the child's code)."""
    child = sends_one.delay().get(timeout=5)
    return [[self.request.id, self.request.parent_id, self.request.root_id], *child]


@app.task(bind=True)
def sends_one(self: Any) -> list[list[str | None]]:
    mine = [self.request.id, self.request.parent_id, self.request.root_id]
    return [mine, lineage.delay().get(timeout=5)]


@pytest.fixture(autouse=True)
def fresh_counts() -> None:
    calls.clear()


@pytest.fixture
def worker() -> Iterator[MemoryWorker]:
    with eager(app) as running:
        yield running


def test_a_task_sent_by_a_task_is_its_child(worker: MemoryWorker) -> None:
    top, child, grandchild = family.delay().get(timeout=5)
    assert top[1:] == [None, None]
    assert child[1:] == [top[0], top[0]]
    assert grandchild[1:] == [child[0], top[0]]
    # Sent from outside any task again: no parent.
    assert lineage.delay().get(timeout=5)[1:] == [None, None]


def test_delay_returns_a_finished_result(worker: MemoryWorker) -> None:
    result = add.delay(2, 3)
    assert result.state is TaskState.SUCCESS
    assert result.get(timeout=1) == 5
    assert result.result == 5
    assert calls == {"add": 1}
    assert worker.tasks() == []


def test_apply_async_send_task_and_countdown(worker: MemoryWorker) -> None:
    assert add.apply_async((1, 1), countdown=600).get(timeout=1) == 2
    assert app.send_task(add.name, [4, 5]).get(timeout=1) == 9
    assert worker.count("succeeded", add.name) == 2


def test_refuses_arguments_json_cannot_carry_with_the_message_a_real_submit_gives() -> None:
    # Outside eager mode, the SDK refuses before it connects to anything.
    with pytest.raises(TypeError) as real:
        add.delay({1, 2}, 3)
    with eager(app) as worker, pytest.raises(TypeError) as eagerly:
        add.delay({1, 2}, 3)
    assert str(eagerly.value) == str(real.value)
    assert "not JSON-serializable" in str(real.value)
    assert calls == {}
    assert worker.tasks() == []


def test_a_result_json_cannot_carry_fails_the_task(worker: MemoryWorker) -> None:
    result = returns_a_set.delay()
    assert result.state is TaskState.FAILURE
    with pytest.raises(TaskError, match="JSON"):
        result.get(timeout=1)
    (letter,) = worker.dead_letters("eager")
    assert letter.reason is DeadLetterReason.UNSTORABLE_RESULT


def test_autoretry_for_retries_then_dead_letters(worker: MemoryWorker) -> None:
    result = always_flaky.delay()
    # Not on the app's result_exception_modules: a TaskError named after it.
    with pytest.raises(TaskError, match="did not answer") as failed:
        result.get(timeout=1)
    assert type(failed.value).__name__ == "FlakyError"
    assert calls == {"always_flaky": 3}  # the first run and max_retries=2 retries
    assert worker.count("retried") == 2
    (letter,) = worker.dead_letters()
    assert letter.reason is DeadLetterReason.MAX_RETRIES
    assert letter.deliveries == 3
    assert letter.task == always_flaky.name


def test_autoretry_for_succeeds_once_the_error_goes_away(worker: MemoryWorker) -> None:
    assert flaky_twice.delay().get(timeout=1) == "charged"
    assert calls == {"flaky_twice": 3}
    assert worker.dead_letters() == []


def test_an_error_not_listed_is_not_retried(worker: MemoryWorker) -> None:
    with pytest.raises(ValueError, match="quantity"):
        wrong_input.delay().get(timeout=1)
    assert calls == {"wrong_input": 1}
    assert worker.count("retried") == 0


def test_self_retry_runs_again_without_waiting(worker: MemoryWorker) -> None:
    result = retries_itself.delay()
    assert result.get(timeout=1) == 2
    assert worker.count("retried") == 2


def test_self_retry_past_max_retries_raises_max_retries_exceeded(worker: MemoryWorker) -> None:
    with pytest.raises(MaxRetriesExceededError):
        retries_forever.delay().get(timeout=1)
    assert calls == {"retries_forever": 2}


def test_chain_passes_each_result_on(worker: MemoryWorker) -> None:
    result = chain(add.s(1, 2), add.s(10), add.s(100)).delay()
    assert result.get(timeout=1) == 113
    assert result.parent is not None
    assert result.parent.get(timeout=1) == 13


def test_chain_after_a_failed_step_does_not_run_the_rest(worker: MemoryWorker) -> None:
    result = chain(wrong_input.si(), add.s(1)).delay()
    with pytest.raises(TaskError, match="earlier chain step"):
        result.get(timeout=1)
    assert calls == {"wrong_input": 1}


def test_group_results_in_order(worker: MemoryWorker) -> None:
    result = group(add.s(i, i) for i in range(5)).delay()
    assert result.get(timeout=1) == [0, 2, 4, 6, 8]


def test_chord_body_gets_the_list(worker: MemoryWorker) -> None:
    result = chord([add.s(i, 1) for i in range(4)], total.s()).delay()
    assert result.get(timeout=1) == 1 + 2 + 3 + 4


def test_nested_canvas_runs_as_on_a_worker(worker: MemoryWorker) -> None:
    # A group inside a chain: its results, as a list, go to the next step.
    result = chain(add.s(1, 2), group(add.s(10), add.s(20)), total.s()).delay()
    assert result.get(timeout=1) == 13 + 23
    # A chain inside a group.
    assert group(chain(add.s(1, 1), add.s(1)), add.s(5, 5)).delay().get(timeout=1) == [3, 10]


def test_async_task_from_sync_code(worker: MemoryWorker) -> None:
    assert slow_double.delay(21).get(timeout=1) == 42


def test_a_task_submitting_a_task(worker: MemoryWorker) -> None:
    assert places_order.delay(4).get(timeout=5) == 50
    assert calls == {"add": 1}


def test_unknown_task_fails_and_is_dead_lettered(worker: MemoryWorker) -> None:
    result = app.send_task("no.such.task", [1])
    with pytest.raises(TaskError, match="not registered"):
        result.get(timeout=1)
    (letter,) = worker.dead_letters()
    assert letter.reason is DeadLetterReason.UNKNOWN_TASK


def test_revoked_before_it_is_due_never_runs(worker: MemoryWorker) -> None:
    # A task revoked by id before it is submitted (a revoke is durable) is skipped.
    app.AsyncResult("order-7").revoke()
    result = add.apply_async((1, 2), task_id="order-7")
    with pytest.raises(TaskRevokedError):
        result.get(timeout=1)
    assert calls == {}
    assert worker.count("revoked") == 1


async def test_async_twins_on_the_test_loop() -> None:
    with eager(app) as worker:
        result = await add.adelay(20, 22)
        assert await result.aget(timeout=1) == 42
        group_result = await group(slow_double.s(1), slow_double.s(2)).adelay()
        assert await group_result.aget(timeout=1) == [2, 4]
        assert worker.count("succeeded") == 3


def test_leaving_the_block_puts_the_app_back_on_nats() -> None:
    with eager(app):
        assert app.client.connector is not None
    assert app.client.connector is None


def test_blocks_do_not_share_state() -> None:
    with eager(app):
        first = add.delay(1, 1)
        assert first.get(timeout=1) == 2
    with eager(app) as worker:
        assert worker.result(first.id) is None
        assert worker.dead_letters() == []


def test_propagate_raises_from_the_submit_call() -> None:
    with eager(app, propagate=True) as worker:
        with pytest.raises(ValueError, match="quantity"):
            wrong_input.delay()
        # A step that fails inside a chain fails the chain, not the submit of its first step.
        result = chain(add.s(1, 2), wrong_input.si()).delay()
        with pytest.raises(ValueError, match="quantity"):
            result.get(timeout=1)
        assert worker.count("failed") == 2


def test_app_conf_task_always_eager() -> None:
    conf_app = Celeriac("eager-conf-tests", default_queue="eager")
    double = conf_app.task(name="double")(lambda x: 2 * x)
    conf_app.conf.task_always_eager = True
    try:
        assert double.delay(21).get(timeout=1) == 42
        running = worker_of(conf_app)
        assert running is not None
        assert running.count("succeeded") == 1
        conf_app.conf.task_eager_propagates = True
        with pytest.raises(TypeError, match="positional argument"):
            double.delay("x", "y")  # the task's own TypeError, raised by delay()
    finally:
        conf_app.conf.task_always_eager = False
    assert conf_app.client.connector is None
    assert worker_of(conf_app) is None
