"""Workloads on the real control plane: autoscaling reaction and operator scale.

Autoscaling: a WorkerPool at zero replicas gets a burst of backlog; we time the
Deployment's replicas rising and the first task reaching a worker (a pod the pod
runner starts as a local process). KEDA is not run here: its default reaction is
computed from its documented defaults (30 s polling, 15 s HPA sync) and labelled so.

Operator scale: 500 TaskQueues and 500 WorkerPools applied at once (by a few
concurrent ``kubectl apply`` calls, as a deploy job applying several folders
would); we time until every one is Ready and read the operator's peak RSS.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from celeriac_devenv.cluster import KubeEnvironment

from bench import kubeenv
from bench.jetstreaming import QueueAdmin
from bench.servers import running_nats
from bench.workloads import Row, row, say
from celeriac.app import Celeriac

KEDA_POLLING_S = 30.0
HPA_SYNC_S = 15.0
BURST = 400
BURST_SLEEP = 0.5
# One kubectl sends its objects one request at a time; a few calls share the load.
APPLY_CALLS = 4


def run(
    selected: Sequence[str],
    *,
    quick: bool,
    scratch: Path,
    out: Path | None = None,
    stem: str = "",
) -> Iterator[tuple[str, list[Row]]]:
    """Start NATS, the control plane and CRDs once; run each selected workload.

    ``out`` and ``stem`` name the autoscale-replay chart and curves (``out/stem-...``).
    """
    say("== kubernetes: starting the local control plane")
    with running_nats(scratch / "nats") as nats, kubeenv.cluster(scratch, nats) as env:
        if "autoscale-replay" in selected:
            from bench import autoscalereplay

            say("== autoscale-replay: a bursty trace on the real operator vs the simulator")
            with kubeenv.operator(env, scratch / "operator-replay"):
                rows = autoscalereplay.replay(
                    env, quick=quick, out=out or scratch / "replay", stem=stem
                )
            yield "autoscale-replay", rows
        if "autoscale" in selected:
            say("== autoscale: backlog burst on a WorkerPool at zero replicas")
            with kubeenv.operator(env, scratch / "operator-autoscale"):
                rows = autoscale(env)
            yield "autoscale", rows
        if "operator" in selected:
            count = 20 if quick else 500
            say(f"== operator: {count} TaskQueues + {count} WorkerPools applied at once")
            with kubeenv.operator(env, scratch / "operator-scale") as proc:
                rows = operator_scale(env, proc.pid, count)
            yield "operator", rows


def _wait(check: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def autoscale(env: KubeEnvironment) -> list[Row]:
    """Burst into an idle pool at zero; time replicas > 0 and the first delivery."""
    kube, ns, queue = kubeenv.Kube(env), "bench-autoscale", "bench-scale"
    kube.create_namespace(ns)
    kubeenv.apply(env, [kubeenv.task_queue(queue, ns), kubeenv.worker_pool(queue, ns, queue)])
    _wait(lambda: kube.ready_count(ns, "TaskQueue") == 1, 60, "the TaskQueue Ready")
    _wait(lambda: kube.replicas(ns, queue) == 0, 60, "the worker Deployment at 0 replicas")
    app = Celeriac("bench-burst", env.nats_url, default_queue=queue, declare_queues=False)
    admin = QueueAdmin(str(env.nats_url), queue)
    try:
        signatures = [app.signature("bench.asleep", [BURST_SLEEP]) for _ in range(BURST)]
        burst_at = time.monotonic()
        app.send_many(signatures)
        marks = _watch_scale_up(kube, admin, ns, queue, burst_at)
    finally:
        app.close()
        admin.close()
    keda_first = KEDA_POLLING_S
    keda_rise = KEDA_POLLING_S + HPA_SYNC_S
    return [
        row("celeriac", "from zero, pollInterval 2s (default)", **marks),
        row(
            "keda-defaults",
            "computed: 30 s polling + 15 s HPA sync",
            backlog_to_replicas_s=keda_rise,
            keda_activation_s=keda_first,
        ),
    ]


def _watch_scale_up(
    kube: kubeenv.Kube, admin: QueueAdmin, ns: str, pool: str, burst_at: float
) -> dict[str, float]:
    """Poll the Deployment and the consumer until a task ran and replicas peaked."""
    first_replicas = first_task = None
    peak, peak_at = 0, burst_at
    deadline = burst_at + 90
    while time.monotonic() < deadline:
        now = time.monotonic()
        replicas = kube.replicas(ns, pool) or 0
        if replicas > peak:
            peak, peak_at = replicas, now
        if first_replicas is None and replicas > 0:
            first_replicas = now
        if first_task is None:
            backlog = admin.backlog()
            if backlog.undelivered < BURST:
                first_task = now
        if first_task is not None and now - peak_at > 10:
            break
        time.sleep(0.05)
    if first_replicas is None or first_task is None:
        raise TimeoutError(f"no scale-up within 90 s (replicas {peak}, first task {first_task})")
    return {
        "backlog_to_replicas_s": first_replicas - burst_at,
        "backlog_to_first_task_s": first_task - burst_at,
        "backlog_to_peak_replicas_s": peak_at - burst_at,
        "peak_replicas": float(peak),
    }


def apply_concurrently(env: KubeEnvironment, objects: list[dict[str, Any]], calls: int) -> None:
    """Apply ``objects`` split in order into ``calls`` slices, one ``kubectl`` call each."""
    size = -(-len(objects) // calls)
    slices = [objects[i : i + size] for i in range(0, len(objects), size)]
    with ThreadPoolExecutor(len(slices)) as pool:
        list(pool.map(lambda part: kubeenv.apply(env, part), slices))  # re-raises failures


def operator_scale(env: KubeEnvironment, operator_pid: int, count: int) -> list[Row]:
    """Apply ``count`` TaskQueues and WorkerPools at once; time until all are Ready."""
    kube, ns = kubeenv.Kube(env), "bench-operator"
    kube.create_namespace(ns)
    objects: list[dict[str, Any]] = []
    for i in range(count):
        name = f"bench-op-{i:04d}"
        objects.append(kubeenv.task_queue(name, ns))
        objects.append(kubeenv.worker_pool(name, ns, name))
    started = time.monotonic()
    apply_concurrently(env, objects, APPLY_CALLS)
    applied = time.monotonic() - started
    say(f"    applied {2 * count} objects in {applied:.1f} s; waiting for Ready")
    last_report = 0.0

    def all_ready() -> bool:
        nonlocal last_report
        queues = kube.ready_count(ns, "TaskQueue")
        pools = kube.ready_count(ns, "WorkerPool")
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            say(f"    ready: {queues}/{count} TaskQueues, {pools}/{count} WorkerPools")
        return queues == count and pools == count

    _wait(all_ready, 600, f"{count} TaskQueues and WorkerPools Ready", interval=0.5)
    ready = time.monotonic() - started
    return [
        row(
            "celeriac",
            f"{count} TaskQueues + {count} WorkerPools",
            all_ready_s=ready,
            apply_s=applied,
            ready_after_apply_s=ready - applied,
            peak_rss_mib=kubeenv.peak_rss_mib(operator_pid),
        )
    ]
