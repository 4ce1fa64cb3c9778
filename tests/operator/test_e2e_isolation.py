"""One queue, one owner: two namespaces' TaskQueues for one queue name, with the real
control plane, operator and NATS."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
import yaml
from celeriac_devenv.cluster import KubeEnvironment
from nats.js.errors import NotFoundError

from celeriac.operator.claims import OWNER_KEY
from celeriac.operator.taskqueues import STATUS_INTERVAL
from celeriac.protocol import names
from tests.operator.kubeobjects import condition, get, js_call, wait

pytestmark = pytest.mark.e2e

T = TypeVar("T")


@pytest.fixture
def other_namespace(crds: KubeEnvironment) -> Iterator[str]:
    """A second fresh namespace (the ``namespace`` fixture gives the first)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    crds.kubectl("create", "namespace", name)
    yield name
    crds.kubectl("delete", "namespace", name, "--wait=false", check=False)


def apply_queue(kube: KubeEnvironment, namespace: str, name: str, **spec: Any) -> None:
    obj = {
        "apiVersion": "celeriac.io/v1alpha1",
        "kind": "TaskQueue",
        "metadata": {"name": name},
        "spec": spec,
    }
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(obj))


def delete_queue(kube: KubeEnvironment, namespace: str, name: str) -> None:
    """Delete and wait until the operator has handled it (the finalizer is gone)."""
    kube.kubectl("delete", "-n", namespace, "tq", name, "--timeout=60s")


def ready(kube: KubeEnvironment, namespace: str, name: str) -> dict[str, Any] | None:
    """The TaskQueue once Ready=True."""
    obj: dict[str, Any] | None = get(kube, namespace, "tq", name)
    cond = condition(obj, "Ready")
    return obj if cond and cond["status"] == "True" else None


def refused(
    kube: KubeEnvironment, namespace: str, name: str, generation: int | None = None
) -> dict[str, Any] | None:
    """The TaskQueue once Ready=False with reason QueueClaimed (for ``generation``)."""
    obj: dict[str, Any] | None = get(kube, namespace, "tq", name)
    cond = condition(obj, "Ready")
    if not cond or cond["status"] != "False" or cond["reason"] != "QueueClaimed":
        return None
    if generation is not None and cond.get("observedGeneration") != generation:
        return None
    return obj


def stream_info(kube: KubeEnvironment, stream: str) -> Any:
    async def call(js: Any) -> Any:
        try:
            return await js.stream_info(stream)
        except NotFoundError:
            return None

    return js_call(kube, call)


def owner(kube: KubeEnvironment, queue: str) -> str | None:
    info = stream_info(kube, names.stream_name(queue))
    return None if info is None else (info.config.metadata or {}).get(OWNER_KEY)


def messages(kube: KubeEnvironment, queue: str) -> int | None:
    info = stream_info(kube, names.stream_name(queue))
    return None if info is None else int(info.state.messages)


def ack_wait(kube: KubeEnvironment, queue: str) -> float:
    async def call(js: Any) -> float:
        info = await js.consumer_info(names.stream_name(queue), names.CONSUMER_NAME)
        return float(info.config.ack_wait)

    result: float = js_call(kube, call)
    return result


def publish(kube: KubeEnvironment, queue: str, count: int) -> None:
    batch = uuid.uuid4().hex

    async def call(js: Any) -> None:
        for i in range(count):
            headers = {"Nats-Msg-Id": f"{batch}-{i}"}
            await js.publish(names.task_subject(queue), b"{}", headers=headers)

    js_call(kube, call)


def events(kube: KubeEnvironment, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    found = get(kube, namespace, "events", "--field-selector", f"involvedObject.name={name}")
    return [e for e in (found or {}).get("items", []) if e.get("reason") == reason]


def test_a_queue_belongs_to_one_taskqueue(
    operator: Any, namespace: str, other_namespace: str
) -> None:
    kube, name, tasks = operator.kube, f"e2e-{uuid.uuid4().hex[:8]}", 7
    first, second = namespace, other_namespace

    # The first TaskQueue creates the queue and owns it.
    apply_queue(kube, first, name)
    wait(lambda: ready(kube, first, name), "the first TaskQueue Ready")
    assert owner(kube, name) == f"{first}/{name}"

    # The second one, in another namespace, is refused and names the owner.
    apply_queue(kube, second, name, deletionPolicy="Delete")
    tq = wait(lambda: refused(kube, second, name), "the second TaskQueue refused")
    message = condition(tq, "Ready")["message"]  # type: ignore[index]
    assert f"queue {name} belongs to TaskQueue {first}/{name}" in message
    synced = condition(tq, "Synced")
    assert synced and (synced["status"], synced["reason"]) == ("False", "QueueClaimed")
    # It reports no stream and no numbers of a queue it does not own.
    assert "stream" not in tq["status"] and "backlog" not in tq["status"], tq["status"]
    wait(lambda: events(kube, second, name, "QueueClaimed"), "a QueueClaimed event")

    publish(kube, name, tasks)
    wait(
        lambda: get(kube, first, "tq", name)["status"].get("backlog") == tasks,
        f"the owner's backlog at {tasks}",
    )

    # A spec change of the refused one changes nothing in JetStream.
    apply_queue(kube, second, name, deletionPolicy="Delete", delivery={"ackWait": "2m"})
    generation = get(kube, second, "tq", name)["metadata"]["generation"]
    assert generation > 1
    wait(lambda: refused(kube, second, name, generation), "the change handled and refused")
    # Nothing to wait for: after a status refresh too, the owner's settings still stand.
    time.sleep(STATUS_INTERVAL + 1)
    assert refused(kube, second, name, generation)
    assert ack_wait(kube, name) == 30
    assert owner(kube, name) == f"{first}/{name}"

    # Deleting it with deletionPolicy Delete leaves the owner's queue alone.
    delete_queue(kube, second, name)
    assert messages(kube, name) == tasks
    assert owner(kube, name) == f"{first}/{name}"
    assert stream_info(kube, names.dead_letter_stream_name(name)) is not None
    assert ack_wait(kube, name) == 30
    assert ready(kube, first, name)

    # Back again, refused again; when the owner goes with Retain it takes the queue over
    # (tasks included) within one status refresh, and applies its own spec.
    apply_queue(kube, second, name, deletionPolicy="Delete", delivery={"ackWait": "2m"})
    wait(lambda: refused(kube, second, name), "the re-applied TaskQueue refused")
    delete_queue(kube, first, name)
    taken = wait(
        lambda: ready(kube, second, name),
        "the second TaskQueue to take the queue over",
        timeout=3 * STATUS_INTERVAL,
    )
    assert owner(kube, name) == f"{second}/{name}"
    assert messages(kube, name) == tasks
    assert ack_wait(kube, name) == 120
    assert taken["status"]["stream"] == names.stream_name(name)
    wait(
        lambda: get(kube, second, "tq", name)["status"].get("backlog") == tasks,
        f"the new owner's backlog at {tasks}",
    )

    # Refusals were logged once per handler run (create, change, delete, create again),
    # not on every status refresh, and never as errors or a NATS outage.
    log = operator.process.log_path.read_text(errors="replace")
    lines = [line for line in log.splitlines() if name in line]
    refusals = [
        line for line in lines if "[INFO" in line and f"belongs to TaskQueue {first}" in line
    ]
    assert 4 <= len(refusals) <= 5, refusals
    bad = ("[ERROR", "failed temporarily", "NatsUnavailable")
    assert not [line for line in lines if any(b in line for b in bad)], lines
    conditions = get(kube, second, "tq", name)["status"]["conditions"]
    assert all(c["reason"] != "NatsUnavailable" for c in conditions), conditions

    # The new owner's deletionPolicy Delete removes the queue.
    delete_queue(kube, second, name)
    assert messages(kube, name) is None
    assert stream_info(kube, names.dead_letter_stream_name(name)) is None
