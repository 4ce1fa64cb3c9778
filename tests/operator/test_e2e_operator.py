"""The operator against the real control plane and NATS: queues, pools, scaling, deletion."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from celeriac_devenv.cluster import KubeEnvironment
from celeriac_devenv.processes import free_port, spawn
from nats.js.errors import NotFoundError

from celeriac.protocol import names
from tests.operator.kubeobjects import condition, get, js_call, wait
from tests.support import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def apply(kube: KubeEnvironment, namespace: str, obj: dict[str, Any]) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(obj))


def example(name: str, new_name: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name).read_text())
    obj["metadata"]["name"] = new_name
    if obj["kind"] == "WorkerPool":
        obj["spec"]["queues"] = [new_name]
    return obj


def queue_obj(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "celeriac.io/v1alpha1",
        "kind": "TaskQueue",
        "metadata": {"name": name},
        "spec": spec,
    }


def pool_obj(name: str, queues: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "celeriac.io/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        # No such module: the local pod runner's workers never consume, so backlog stays put.
        "spec": {"queues": queues, "app": "celeriac_e2e_absent", "image": "w:1", **spec},
    }


def unique() -> str:
    return f"e2e-{uuid.uuid4().hex[:8]}"


def stream_messages(kube: KubeEnvironment, queue: str) -> int | None:
    async def call(js: Any) -> int | None:
        try:
            info = await js.stream_info(names.stream_name(queue))
        except NotFoundError:
            return None
        return int(info.state.messages)

    result: int | None = js_call(kube, call)
    return result


def publish(kube: KubeEnvironment, queue: str, count: int) -> None:
    batch = uuid.uuid4().hex

    async def call(js: Any) -> None:
        for i in range(count):
            msg_id = f"{batch}-{i}"
            await js.publish(names.task_subject(queue), b"{}", headers={"Nats-Msg-Id": msg_id})

    js_call(kube, call)


def deployment(kube: KubeEnvironment, namespace: str, pool: str) -> Any:
    return get(kube, namespace, "deployment", f"{pool}-workers")


def replicas_of(kube: KubeEnvironment, namespace: str, pool: str) -> int | None:
    dep = deployment(kube, namespace, pool)
    return None if dep is None else int(dep["spec"]["replicas"])


def scaled_events(kube: KubeEnvironment, namespace: str, pool: str) -> list[dict[str, Any]]:
    events = get(kube, namespace, "events", "--field-selector", f"involvedObject.name={pool}")
    return [e for e in (events or {}).get("items", []) if e.get("reason") == "Scaled"]


def test_examples_make_stream_consumer_and_deployment(operator: Any, namespace: str) -> None:
    kube, name = operator.kube, unique()
    apply(kube, namespace, example("taskqueue.yaml", name))
    apply(kube, namespace, example("workerpool.yaml", name))

    tq = wait(
        lambda: (o := get(kube, namespace, "tq", name)) and condition(o, "Ready") and o,
        "TaskQueue Ready",
    )
    assert condition(tq, "Ready")["status"] == "True", tq["status"]
    assert tq["status"]["stream"] == names.stream_name(name)
    assert stream_messages(kube, name) == 0

    async def consumer(js: Any) -> Any:
        return await js.consumer_info(names.stream_name(name), names.CONSUMER_NAME)

    info = js_call(kube, consumer)
    assert info.config.ack_wait == 30

    dep = wait(lambda: deployment(kube, namespace, name), "the worker Deployment")
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == [
        "celeriac", "worker", "-A", "shop.tasks:app", "-Q", name, "-c", "8", "--pool", "asyncio",
        "--drain-timeout", "55",  # the example's 60 s grace period, less the exit margin
    ]  # fmt: skip
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CELERIAC_NATS_URL"] == kube.nats_url
    assert env["CELERIAC_DECLARE_QUEUES"] == "0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["terminationGracePeriodSeconds"] == 60
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "WorkerPool"

    table = kube.kubectl("get", "-n", namespace, "tq,wp").stdout
    for column in ("BACKLOG", "IN-FLIGHT", "DEAD-LETTERS", "QUEUES", "DESIRED", "MIN", "MAX"):
        assert column in table, table


def test_scale_with_autoscaling_off(operator: Any, namespace: str) -> None:
    kube, name = operator.kube, unique()
    apply(kube, namespace, queue_obj(name))
    apply(kube, namespace, pool_obj(name, [name], replicas=1))
    wait(lambda: replicas_of(kube, namespace, name) == 1, "Deployment with 1 replica")
    kube.kubectl("scale", "-n", namespace, f"wp/{name}", "--replicas=3")
    wait(lambda: replicas_of(kube, namespace, name) == 3, "Deployment scaled to 3")
    wait(
        lambda: get(kube, namespace, "wp", name)["status"].get("desiredReplicas") == 3,
        "status.desiredReplicas 3",
    )


def test_settings_jetstream_refuses_are_not_an_outage(operator: Any, namespace: str) -> None:
    """Three replicas on a single nats-server: JetStream says no, and the status says so."""
    kube, name = operator.kube, unique()
    apply(kube, namespace, queue_obj(name, replicas=3))

    def refused() -> dict[str, Any] | None:
        cond = condition(get(kube, namespace, "tq", name), "Ready")
        return cond if cond and cond["status"] == "False" else None

    cond = wait(refused, "Ready=False")
    assert cond["reason"] == "JetStreamRefused", cond
    assert f"JetStream refused queue {name}" in cond["message"]
    assert "NatsUnavailable" not in json.dumps(get(kube, namespace, "tq", name)["status"])


def test_missing_queue_is_reported(operator: Any, namespace: str) -> None:
    kube, name = operator.kube, unique()
    apply(kube, namespace, pool_obj(name, [f"{name}-nowhere"]))

    def reported() -> dict[str, Any] | None:
        cond = condition(get(kube, namespace, "wp", name), "QueuesFound")
        return cond if cond and cond["status"] == "False" else None

    cond = wait(reported, "QueuesFound=False")
    assert cond["reason"] == "QueueNotFound"
    assert f"{name}-nowhere" in cond["message"]


def test_retain_keeps_the_stream_and_delete_removes_it(operator: Any, namespace: str) -> None:
    kube = operator.kube
    kept, gone = unique(), unique()
    apply(kube, namespace, queue_obj(kept))
    apply(kube, namespace, queue_obj(gone, deletionPolicy="Delete"))
    for q in (kept, gone):
        wait(lambda q=q: stream_messages(kube, q) is not None, f"stream of {q}")
    publish(kube, kept, 5)
    wait(lambda: get(kube, namespace, "tq", kept)["status"].get("backlog") == 5, "backlog 5")
    kube.kubectl("delete", "-n", namespace, "tq", kept, gone, "--timeout=60s")
    assert stream_messages(kube, kept) == 5
    assert stream_messages(kube, gone) is None


def test_autoscaling_follows_backlog_and_survives_restart(operator: Any, namespace: str) -> None:
    kube, name = operator.kube, unique()
    apply(kube, namespace, queue_obj(name))
    auto = {
        "minReplicas": 0,
        "maxReplicas": 8,
        "targetBacklogPerReplica": 10,
        "scaleDownStabilization": "3s",
        "idleBeforeZero": "6s",
        "pollInterval": "1s",
    }
    apply(kube, namespace, pool_obj(name, [name], autoscaling=auto))
    wait(lambda: replicas_of(kube, namespace, name) == 0, "pool at zero")
    # The queue's stream comes from the TaskQueue's own reconcile, which may come later.
    wait(lambda: stream_messages(kube, name) is not None, "the stream")
    publish(kube, name, 35)
    wait(lambda: replicas_of(kube, namespace, name) == 4, "scale up to 4", timeout=15)
    status = wait(
        lambda: (s := get(kube, namespace, "wp", name)["status"]).get("lastScaleTime") and s,
        "lastScaleTime recorded",
    )
    assert status["desiredReplicas"] == 4
    assert "scale up from 0 to 4" in status["lastScaleReason"]
    wait(lambda: scaled_events(kube, namespace, name), "a Scaled event")

    # Restart mid-scale: the new leader keeps the decision and acts only on new work.
    events_before = len(scaled_events(kube, namespace, name))
    operator.restart()
    # 60 tasks: beyond 4 x 10 slots by more than a waiting pool's noise (3 sqrt(40)).
    publish(kube, name, 25)
    wait(lambda: replicas_of(kube, namespace, name) == 6, "scale up to 6 after restart")
    # The Deployment is scaled first and the status written after it.
    status = wait(
        lambda: (s := get(kube, namespace, "wp", name)["status"])["desiredReplicas"] == 6 and s,
        "desiredReplicas 6 recorded",
    )
    assert "scale up from 4 to 6" in status["lastScaleReason"]
    messages = wait(
        lambda: (
            (m := [e["message"] for e in scaled_events(kube, namespace, name)])
            and len(m) > events_before
            and m
        ),
        "the event of the scale to 6",
    )
    assert len(messages) == events_before + 1, messages
    assert sum("from 0 to 4" in m for m in messages) == 1, messages

    # The work goes away: down to one after the window, then to zero when idle.
    async def purge(js: Any) -> None:
        await js.purge_stream(names.stream_name(name))

    js_call(kube, purge)
    wait(lambda: replicas_of(kube, namespace, name) == 0, "scale to zero", timeout=30)
    reasons = [e["message"] for e in scaled_events(kube, namespace, name)]
    assert any("scale to zero" in r for r in reasons), reasons


def test_spec_change_rolls_and_deleting_the_pool_deletes_the_deployment(
    operator: Any, namespace: str
) -> None:
    kube, name = operator.kube, unique()
    apply(kube, namespace, queue_obj(name))
    apply(kube, namespace, pool_obj(name, [name], replicas=1))
    first = wait(lambda: deployment(kube, namespace, name), "the Deployment")
    kube.kubectl("patch", "-n", namespace, f"wp/{name}", "--type=merge", "-p",
                 '{"spec": {"concurrency": 3}}')  # fmt: skip

    def rolled() -> Any:
        dep = deployment(kube, namespace, name)
        command = dep["spec"]["template"]["spec"]["containers"][0]["command"]
        return dep if "3" in command else None

    second = wait(rolled, "the new pod template")
    assert second["metadata"]["generation"] > first["metadata"]["generation"]
    wp = wait(
        lambda: (
            (o := get(kube, namespace, "wp", name))["status"].get("observedGeneration")
            == o["metadata"]["generation"]
            and o
        ),
        "observedGeneration to catch up",
    )
    assert wp["status"]["selector"] == f"celeriac.io/pool={name}"
    kube.kubectl("delete", "-n", namespace, "wp", name, "--timeout=60s")
    wait(lambda: deployment(kube, namespace, name) is None, "the Deployment to be collected")


def test_queue_spec_change_updates_the_consumer(operator: Any, namespace: str) -> None:
    kube, name = operator.kube, unique()
    apply(kube, namespace, queue_obj(name, deletionPolicy="Delete"))
    wait(lambda: stream_messages(kube, name) is not None, "the stream")
    apply(kube, namespace, queue_obj(name, deletionPolicy="Delete", delivery={"ackWait": "2m"}))

    async def ack_wait(js: Any) -> float:
        info = await js.consumer_info(names.stream_name(name), names.CONSUMER_NAME)
        return float(info.config.ack_wait)

    wait(lambda: js_call(kube, ack_wait) == 120, "ack wait updated to 2m")
    tq = get(kube, namespace, "tq", name)
    synced = wait(
        lambda: (
            (c := condition(get(kube, namespace, "tq", name), "Synced"))
            and c["observedGeneration"] == tq["metadata"]["generation"]
            and c
        ),
        "Synced for the new generation",
    )
    assert synced["status"] == "True"


def test_one_replica_acts_and_a_standby_takes_over(
    operator: Any, tmp_path: Path, namespace: str
) -> None:
    standby = type(operator)(operator.kube, tmp_path)
    try:
        standby.start(role="standby")
        operator.stop()
        wait(lambda: standby.role() == "leader", "the standby to take over", timeout=30)
        # The new leader reconciles.
        name = unique()
        apply(standby.kube, namespace, queue_obj(name, deletionPolicy="Delete"))
        wait(lambda: stream_messages(standby.kube, name) is not None, "the stream")
    finally:
        standby.stop()
        operator.start()


def test_kopf_run_works_too(operator: Any, tmp_path: Path, namespace: str) -> None:
    kube = operator.kube
    port = free_port()
    env = {**kube.tool_env(), "CELERIAC_NATS_URL": str(kube.nats_url)}
    argv = [
        sys.executable, "-m", "kopf", "run", "-m", "celeriac.operator.handlers",
        "--standalone", "--all-namespaces", "--liveness", f"http://127.0.0.1:{port}/healthz",
    ]  # fmt: skip
    operator.stop()
    proc = spawn("kopf-run", argv, log_dir=tmp_path, env=env, cwd=ROOT)
    try:
        name = unique()
        apply(kube, namespace, queue_obj(name, deletionPolicy="Delete"))
        wait_until(
            lambda: stream_messages(kube, name) is not None,
            timeout=60,
            what="kopf run to create the stream",
            alive=proc,
        )
    finally:
        proc.stop(grace=15)
        operator.start()
