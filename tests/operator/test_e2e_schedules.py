"""TaskSchedules on the real control plane: runs by real workers, the operator killed meanwhile.

Each test applies a TaskQueue, a TaskSchedule and (where runs are needed) a WorkerPool
of one worker, a local process started by the pod runner. The schedule's server-side
state is read straight from NATS, the status with kubectl.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from celeriac_devenv.cluster import KubeEnvironment
from nats.js import JetStreamContext

from celeriac import cron, schedulestore
from celeriac.protocol.envelope import ResultRecord
from celeriac.protocol.periodic import run_id
from tests.operator.conftest import OperatorProcess
from tests.operator.kubeobjects import condition, get, js_call, opscale_pool, wait
from tests.support import read_results

pytestmark = pytest.mark.e2e

TASK = "opscale.square"


def queue_and_pool(name: str, *, workers: bool = True) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "celeriac.io/v1alpha1",
            "kind": "TaskQueue",
            "metadata": {"name": name},
            "spec": {"deletionPolicy": "Delete"},
        }
    ]
    if workers:
        objects.append(opscale_pool(name, [name], replicas=1))
    return objects


def task_schedule(name: str, queue: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "celeriac.io/v1alpha1",
        "kind": "TaskSchedule",
        "metadata": {"name": name},
        "spec": {"task": {"name": TASK, "args": [7], "queue": queue}, **spec},
    }


def apply(kube: KubeEnvironment, namespace: str, objects: list[dict[str, Any]]) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))


def status(kube: KubeEnvironment, namespace: str, name: str) -> dict[str, Any]:
    obj = get(kube, namespace, "ts", name)
    return dict((obj or {}).get("status") or {})


def ready_reason(kube: KubeEnvironment, namespace: str, name: str) -> str | None:
    cond = condition(get(kube, namespace, "ts", name), "Ready")
    return f"{cond['status']}/{cond['reason']}" if cond else None


def server_schedule(
    kube: KubeEnvironment, namespace: str, name: str, queue: str
) -> schedulestore.ScheduleInfo | None:
    """The schedule as nats-server holds it (None when there is none)."""

    async def find(js: JetStreamContext) -> schedulestore.ScheduleInfo | None:
        try:
            return await schedulestore.find_schedule(js, f"{namespace}.{name}", queue)
        except schedulestore.ScheduleNotFoundError:
            return None

    result: schedulestore.ScheduleInfo | None = js_call(kube, find)
    return result


def results(kube: KubeEnvironment, ids: list[str]) -> dict[str, ResultRecord]:
    found: dict[str, ResultRecord] = js_call(kube, lambda js: read_results(js, ids))
    return found


def runs_recorded(kube: KubeEnvironment, namespace: str, name: str, queue: str) -> int:
    info = server_schedule(kube, namespace, name, queue)
    return info.state.runs if info is not None and info.state is not None else 0


def test_runs_go_on_while_the_operator_is_down_and_kubectl_shows_them(
    operator: OperatorProcess, namespace: str
) -> None:
    kube = operator.kube
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    apply(kube, namespace, [*queue_and_pool(queue), task_schedule("tick", queue, every="2s")])

    def last_run_succeeded() -> dict[str, Any] | None:
        st = status(kube, namespace, "tick")
        return st if (st.get("lastRun") or {}).get("state") == "SUCCESS" else None

    st = wait(last_run_succeeded, timeout=120, what="a run of tick recorded SUCCESS")
    run = st["lastRun"]["id"]
    assert run.startswith(f"{namespace}.tick.")
    assert results(kube, [run])[run].result == 49
    assert st["schedule"] == "@every 2s" and st["queue"] == queue and st["runs"] >= 1

    table = kube.kubectl("get", "ts", "-n", namespace).stdout.splitlines()
    header = table[0].split()
    assert header == ["NAME", "SCHEDULE", "TIME-ZONE", "SUSPEND", "LAST", "NEXT", "LAST-STATE",
                      "AGE"]  # fmt: skip
    row = next(line for line in table[1:] if line.startswith("tick "))
    assert "@every 2s" in row and " UTC " in row and " false " in row and "SUCCESS" in row

    # The server fires and the workers run while no operator is there.
    operator.kill()
    try:
        before = runs_recorded(kube, namespace, "tick", queue)
        wait(
            lambda: runs_recorded(kube, namespace, "tick", queue) >= before + 3,
            timeout=60,
            what="three more runs while the operator is down",
        )
        info = server_schedule(kube, namespace, "tick", queue)
        assert info is not None and info.state is not None and info.state.last_run
        done = wait(
            lambda: results(kube, [info.state.last_run]) or None,  # type: ignore[union-attr]
            timeout=30,
            what="the result of a run made while the operator was down",
        )
        assert {r.state.value for r in done.values()} == {"SUCCESS"}
    finally:
        operator.start()
    later = runs_recorded(kube, namespace, "tick", queue)
    wait(
        lambda: (status(kube, namespace, "tick").get("runs") or 0) >= later,
        timeout=60,
        what="the status to count the runs made while the operator was down",
    )


def test_missing_queue_then_suspend_change_restore_and_delete(
    operator: OperatorProcess, namespace: str
) -> None:
    kube = operator.kube
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    apply(kube, namespace, [task_schedule("report", queue, cron="*/5 * * * *")])
    wait(
        lambda: ready_reason(kube, namespace, "report") == "False/QueueMissing",
        timeout=60,
        what="Ready=False QueueMissing without a TaskQueue",
    )
    apply(kube, namespace, queue_and_pool(queue, workers=False))
    wait(
        lambda: ready_reason(kube, namespace, "report") == "True/Scheduled",
        timeout=60,
        what="Scheduled once the queue exists",
    )
    info = server_schedule(kube, namespace, "report", queue)
    assert info is not None and not info.suspended and info.schedule == "0 */5 * * * *"

    kube.kubectl("patch", "ts", "report", "-n", namespace, "--type=merge",
                 "-p", '{"spec": {"suspend": true}}')  # fmt: skip
    wait(
        lambda: (server_schedule(kube, namespace, "report", queue) or info).suspended,
        timeout=60,
        what="the server-side schedule suspended",
    )
    wait(
        lambda: (
            ready_reason(kube, namespace, "report") == "True/Suspended"
            and "nextScheduleTime" not in status(kube, namespace, "report")
        ),
        timeout=30,
        what="the status to say Suspended, with no next time",
    )

    patch = '{"spec": {"suspend": false, "cron": "30 2 * * *", "timeZone": "Europe/Berlin"}}'
    kube.kubectl("patch", "ts", "report", "-n", namespace, "--type=merge", "-p", patch)

    def changed() -> schedulestore.ScheduleInfo | None:
        found = server_schedule(kube, namespace, "report", queue)
        return found if found and found.periodic.cron == "0 30 2 * * *" else None

    info = wait(changed, timeout=60, what="the server-side schedule changed")
    assert not info.suspended and info.periodic.time_zone == "Europe/Berlin"
    expected = cron.next_fire("0 30 2 * * *", None, "Europe/Berlin", datetime.now(UTC))
    wait(
        lambda: (
            status(kube, namespace, "report").get("nextScheduleTime")
            == f"{expected:%Y-%m-%dT%H:%M:%SZ}"
        ),
        timeout=30,
        what=f"nextScheduleTime {expected}",
    )

    # Removed behind the operator's back: written again.
    js_call(kube, lambda js: schedulestore.delete_schedule(js, queue, f"{namespace}.report"))
    wait(
        lambda: server_schedule(kube, namespace, "report", queue) is not None,
        timeout=60,
        what="the operator to write the removed schedule again",
    )

    kube.kubectl("delete", "ts", "report", "-n", namespace, "--timeout=60s")
    assert server_schedule(kube, namespace, "report", queue) is None


def test_next_schedule_time_is_when_the_server_fires(
    operator: OperatorProcess, namespace: str
) -> None:
    """Three times: the nextScheduleTime shown is the slot the next fire stands for, and
    its run starts within a few seconds of it."""
    kube = operator.kube
    queue = f"ts-{uuid.uuid4().hex[:8]}"
    apply(
        kube,
        namespace,
        [*queue_and_pool(queue), task_schedule("pulse", queue, cron="*/4 * * * * *")],
    )
    wait(
        lambda: status(kube, namespace, "pulse").get("runs"),
        timeout=120,
        what="the first run of pulse",
    )
    checked: set[str] = set()
    while len(checked) < 3:
        shown = wait(
            lambda: (
                (n := status(kube, namespace, "pulse").get("nextScheduleTime")) not in checked and n
            ),
            timeout=30,
            what="a nextScheduleTime not checked yet",
        )
        slot = datetime.fromisoformat(str(shown).replace("Z", "+00:00"))
        run = run_id(f"{namespace}.pulse", slot)
        done = wait(lambda r=run: results(kube, [r]).get(r), timeout=60, what=f"the run {run}")
        assert done.state.value == "SUCCESS"
        assert done.date_done is not None
        assert 0 <= (done.date_done - slot).total_seconds() < 10, (slot, done.date_done)
        checked.add(str(shown))
