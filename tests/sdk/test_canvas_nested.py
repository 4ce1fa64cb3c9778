"""Nested canvases, call forms and links, run by a real worker process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from celeriac.app import Celeriac
from celeriac.async_result import AsyncResult, GroupResult
from celeriac.canvas import Signature, chain, chord, group
from celeriac.exceptions import TaskError
from celeriac.protocol.states import TaskState
from tests.support import StartWorker, await_until

pytestmark = pytest.mark.integration


def s(app: Celeriac, name: str, *args: Any, immutable: bool = False) -> Signature:
    return app.signature(name, args, immutable=immutable)


async def lines(path: Path) -> list[str]:
    """The complete lines ``cv.note`` wrote to ``path``, once there is one."""

    def written() -> list[str] | None:
        text = path.read_text() if path.exists() else ""
        return text.splitlines() if text.endswith("\n") else None

    found: list[str] = await await_until(written, timeout=30, what=f"a line in {path}")
    return found


async def test_a_group_inside_a_chain_passes_its_results_on(
    aapp: Celeriac, queue: str, start_worker: StartWorker
) -> None:
    start_worker(queue)
    flow = chain(
        s(aapp, "cv.add", 1, 1),
        group(s(aapp, "cv.mul", 2), s(aapp, "cv.mul", 3)),
        s(aapp, "cv.total"),
        s(aapp, "cv.add", 100),
    )
    result = await flow.aapply_async()
    assert await result.aget(timeout=30) == 110  # 2 -> [4, 6] -> 10 -> 110
    header = result.parent.parent
    assert isinstance(header, GroupResult) and await header.aget(timeout=5) == [4, 6]
    restored = await GroupResult.arestore(header.id, aapp.client)
    assert restored is not None and [r.id for r in restored] == [r.id for r in header]

    ending = await chain(
        s(aapp, "cv.add", 2, 3), group(s(aapp, "cv.mul", 2), s(aapp, "cv.add", 1))
    ).aapply_async()
    assert isinstance(ending, GroupResult)
    assert await ending.aget(timeout=30) == [10, 6]


async def test_chains_inside_a_group_and_a_chord_inside_a_group(
    aapp: Celeriac, queue: str, start_worker: StartWorker
) -> None:
    start_worker(queue)
    inner = chord([s(aapp, "cv.add", 1, 1), s(aapp, "cv.add", 2, 2)], s(aapp, "cv.total"))
    members = group(
        chain(s(aapp, "cv.add", 1, 2), s(aapp, "cv.mul", 10)), inner, s(aapp, "cv.add", 5, 5)
    )
    result = await members.aapply_async()
    assert isinstance(result, GroupResult)
    assert await result.aget(timeout=30) == [30, 6, 10]
    first = result.results[0]
    assert isinstance(first.parent, AsyncResult) and await first.parent.aget(timeout=5) == 3

    # The same shape as a chord header: the callback gets each member's final result.
    summed = await (members | s(aapp, "cv.total")).aapply_async()
    assert await summed.aget(timeout=30) == 46


async def test_a_chord_inside_a_chain_and_a_chain_as_chord_body(
    aapp: Celeriac, queue: str, start_worker: StartWorker
) -> None:
    start_worker(queue)
    header = [s(aapp, "cv.mul", 2), s(aapp, "cv.mul", 3)]
    flow = chain(s(aapp, "cv.add", 1, 1), chord(header, s(aapp, "cv.total")), s(aapp, "cv.add", 1))
    assert await (await flow.aapply_async()).aget(timeout=30) == 11

    body = chain(s(aapp, "cv.total"), s(aapp, "cv.mul", 10))
    result = await chord([s(aapp, "cv.add", 1, 1), s(aapp, "cv.add", 2, 2)], body).aapply_async()
    assert await result.aget(timeout=30) == 60
    assert await result.parent.aget(timeout=5) == 6


def test_call_forms(app: Celeriac, queue: str, start_worker: StartWorker) -> None:
    """``chain(...)(args)``, ``group(...)(args)`` and ``chord(header)(body)`` send, as
    ``apply_async`` does; a signature called runs here."""
    start_worker(queue)
    assert chain(s(app, "cv.add", 1), s(app, "cv.mul", 3))(4).get(timeout=30) == 15
    spread = group(s(app, "cv.add", 1), s(app, "cv.add", 2))(10)
    assert isinstance(spread, GroupResult) and spread.get(timeout=30) == [11, 12]
    joined = chord([s(app, "cv.add", 1, 1), s(app, "cv.add", 2, 2)])(s(app, "cv.total"))
    assert isinstance(joined, AsyncResult) and joined.get(timeout=30) == 6

    @app.task(name="cv.local")
    def local(a: int, b: int) -> int:
        return a - b

    assert local.s(1)(10) == 9  # the call's arguments first, as a parent's result
    with pytest.raises(TypeError, match="not registered in this process"):
        s(app, "cv.add", 1)(2)


async def test_links_and_errbacks_run(
    aapp: Celeriac, queue: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker(queue)
    log = tmp_path / "errbacks.log"
    link_id = f"link-{queue}"
    done = await aapp.asend_task(
        "cv.add",
        (2, 3),
        link=[s(aapp, "cv.mul", 10).set(task_id=link_id), s(aapp, "cv.note", str(tmp_path / "ok"))],
        link_error=s(aapp, "cv.note", str(log)),
    )
    assert await done.aget(timeout=30) == 5
    assert await aapp.AsyncResult(link_id).aget(timeout=30) == 50
    assert await lines(tmp_path / "ok") == ["5"]

    failing = s(aapp, "cv.broken", 7)
    failing.on_error(s(aapp, "cv.note", str(log)))
    failing.link(s(aapp, "cv.note", str(tmp_path / "never")))
    failed = await failing.aapply_async()
    with pytest.raises(TaskError, match="broken on 7"):
        await failed.aget(timeout=30)
    assert await lines(log) == [failed.id]
    assert not (tmp_path / "never").exists()


async def test_an_errback_on_a_chain_runs_for_the_step_that_failed(
    aapp: Celeriac, queue: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker(queue)
    log = tmp_path / "errbacks.log"
    flow = chain(s(aapp, "cv.add", 1, 1), s(aapp, "cv.broken"), s(aapp, "cv.add", 1))
    result = await flow.aapply_async(link_error=s(aapp, "cv.note", str(log)))
    with pytest.raises(TaskError, match="not run: earlier chain step"):
        await result.aget(timeout=30)
    assert isinstance(result.parent, AsyncResult)
    assert await lines(log) == [result.parent.id]


async def test_a_failure_inside_a_nested_canvas_fails_what_depends_on_it(
    aapp: Celeriac, queue: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker(queue)
    log = tmp_path / "callback.log"
    flow = chain(
        s(aapp, "cv.add", 1, 1),
        group(s(aapp, "cv.mul", 2), s(aapp, "cv.broken")),
        s(aapp, "cv.total", str(log)),
        s(aapp, "cv.add", 1),
    )
    result = await flow.aapply_async()
    callback = result.parent
    header = callback.parent
    assert isinstance(header, GroupResult)
    with pytest.raises(
        TaskError, match=r"^.*not run: chord member .* \(index 1\) failed: .*broken on 2"
    ):
        await result.aget(timeout=30)
    failed = await callback.arecord()
    assert failed is not None and failed.state is TaskState.FAILURE
    assert failed.error is not None and failed.error.startswith(
        f"chord member {header.results[1].id} (index 1) failed: "
    )
    assert await header.results[0].aget(timeout=5) == 4  # the other member kept its result
    assert not log.exists()

    # A chain inside a chord header: its first step fails, its second never runs.
    members = group(chain(s(aapp, "cv.broken", 3), s(aapp, "cv.add", 1)), s(aapp, "cv.add", 2, 2))
    joined = await (members | s(aapp, "cv.total", str(log))).aapply_async()
    with pytest.raises(TaskError, match=r"chord member .* \(index 0\) failed: .*broken on 3"):
        await joined.aget(timeout=30)
    second = joined.parent.results[0]
    record = await second.arecord()
    assert record is not None and record.state is TaskState.FAILURE
    assert record.error is not None and "not run: earlier chain step" in record.error
    assert not log.exists()
