"""One short bursty trace on the real control plane, next to the simulator's answer.

A WorkerPool (min 0, max 6, concurrency 10, asyncio pool) autoscaled by the real
operator; each task sleeps an exponential time (mean 200 ms, seeded) and is submitted
at its trace time. A sampler reads the worker Deployment (spec and ready replicas),
the WorkerPool's status and the queue's consumer several times a second. From those
samples come the pod start latency of this environment (scale-up to pod Ready, and
scale-up from zero to the first task running: kwok marks a pod Ready at once, the
worker process starts after that), and the simulator then runs the same arrivals with
the same settings, poll interval and the measured start latency. The two replica
curves are compared burst by burst (:mod:`bench.replaycompare`).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from celeriac_devenv.cluster import KubeEnvironment

from bench import autoscalesim, kubeenv, replaycompare
from bench.jetstreaming import QueueAdmin
from bench.workloads import Row, say
from celeriac.app import Celeriac
from celeriac.operator.autoscaling import ScalingSettings
from celeriac.protocol.kubeschema import parse_duration
from celeriac.protocol.resources import WorkerPoolSpec

MAX_REPLICAS = 6
CONCURRENCY = 10
MEAN_TASK = 0.2
# Short enough for the trace to show the way back to zero after each burst.
IDLE_BEFORE_ZERO = "30s"
SAMPLE_EVERY = 0.25
READ_TIMEOUT = 5.0
# Seconds sampled after the last arrival (the pool goes back to zero within them).
TAIL = 80.0
SEED = 1


@dataclass(frozen=True)
class Sample:
    """One reading, ``t`` seconds after the trace started (-1: the read failed)."""

    t: float
    deployment: int
    deployment_ready: int
    pool_desired: int
    pool_ready: int
    waiting: int
    in_flight: int
    # The operator's estimate of a task's duration (status.taskSeconds).
    task_seconds: float | None = None


class Sampler(threading.Thread):
    """Reads the Deployment, the WorkerPool and the consumer every SAMPLE_EVERY s."""

    def __init__(self, kube: kubeenv.Kube, admin: QueueAdmin, ns: str, pool: str) -> None:
        super().__init__(name="replay-sampler", daemon=True)
        self.kube, self.admin, self.ns, self.pool = kube, admin, ns, pool
        self.t0 = time.monotonic()
        self.samples: list[Sample] = []
        self.failures = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        """Sample until stopped; a failed read is counted and skipped."""
        while not self.stopping.is_set():
            at = time.monotonic()
            try:
                self.samples.append(self.read(at - self.t0))
            except Exception:  # a transient read error costs one sample
                self.failures += 1
            self.stopping.wait(max(0.0, SAMPLE_EVERY - (time.monotonic() - at)))

    def read(self, t: float) -> Sample:
        """One reading of everything."""
        dep = self.kube.apps.read_namespaced_deployment(
            f"{self.pool}-workers", self.ns, _request_timeout=READ_TIMEOUT
        )
        body = self.kube.custom.get_namespaced_custom_object(
            kubeenv.GROUP,
            kubeenv.VERSION,
            self.ns,
            "workerpools",
            self.pool,
            _request_timeout=READ_TIMEOUT,
        )
        status = body.get("status") or {} if isinstance(body, dict) else {}
        backlog = self.admin.backlog()
        return Sample(
            t=t,
            deployment=int(dep.spec.replicas or 0),
            deployment_ready=int((dep.status.ready_replicas if dep.status else 0) or 0),
            pool_desired=int(status.get("desiredReplicas") or 0),
            pool_ready=int(status.get("readyReplicas") or 0),
            waiting=backlog.undelivered,
            in_flight=backlog.unfinished - backlog.undelivered,
            task_seconds=status.get("taskSeconds"),
        )

    def stop(self) -> None:
        """Stop and wait for the thread."""
        self.stopping.set()
        self.join(timeout=10)


def pool_object(name: str, ns: str) -> dict[str, Any]:
    """The autoscaled WorkerPool of the replay."""
    pool = kubeenv.worker_pool(
        name, ns, name, maxReplicas=MAX_REPLICAS, idleBeforeZero=IDLE_BEFORE_ZERO
    )
    pool["spec"]["concurrency"] = CONCURRENCY
    return pool


def replay(env: KubeEnvironment, *, quick: bool, out: Path, stem: str) -> list[Row]:
    """Replay the trace, simulate it, write the chart and curves; the table's rows."""
    kube, ns, name = kubeenv.Kube(env), "bench-replay", "bench-replay"
    kube.create_namespace(ns)
    pool = pool_object(name, ns)
    kubeenv.apply(env, [kubeenv.task_queue(name, ns), pool])
    _wait(lambda: kube.ready_count(ns, "TaskQueue") == 1, 60, "the TaskQueue Ready")
    _wait(lambda: kube.replicas(ns, name) == 0, 60, "the worker Deployment at 0 replicas")
    arrivals = replaycompare.replay_trace(SEED, bursts=2 if quick else 3)
    durations = replaycompare.task_durations(len(arrivals), MEAN_TASK, SEED)
    say(f"    {len(arrivals)} tasks in {len(replaycompare.bursts(arrivals))} bursts")
    end = arrivals[-1] + TAIL
    app = Celeriac("bench-replay", env.nats_url, default_queue=name, declare_queues=False)
    admin = QueueAdmin(str(env.nats_url), name)
    sampler = Sampler(kube, admin, ns, name)
    try:
        sampler.start()
        late = _submit(app, arrivals, durations, sampler.t0)
        while time.monotonic() - sampler.t0 < end:
            time.sleep(0.5)
    finally:
        sampler.stop()
        app.close()
        admin.close()
    events = _scale_events(kube, ns, name)
    spec = WorkerPoolSpec.model_validate(pool["spec"])
    rows, details = analyse(sampler.samples, arrivals, spec, end=end)
    rows[-1]["metrics"].update(max_submit_lag_s=round(late, 3), sample_failures=sampler.failures)
    for r in rows:
        shown = ", ".join(f"{k}={v}" for k, v in r["metrics"].items())
        say(f"    {r['contender']:<30} {r['case']:<20} {shown}")
    out.mkdir(parents=True, exist_ok=True)
    details["scale_events"] = events
    (out / f"{stem}-autoscale-replay.json").write_text(json.dumps(details, indent=1) + "\n")
    chart(details, out / f"{stem}-autoscale-replay.png")
    return rows


# Poll phases (s) the simulator is also run at: the operator's polls drift against the trace.
PHASES = (0.0, 0.5, 1.0, 1.5)


def analyse(
    samples: list[Sample], arrivals: list[float], spec: WorkerPoolSpec, *, end: float
) -> tuple[list[Row], dict[str, Any]]:
    """The measured start latencies, the simulator on the same arrivals, and the table."""
    slots = ScalingSettings.from_spec(spec).slots
    measured = start_latencies(samples)
    desired = replaycompare.steps([(s.t, s.deployment) for s in samples])
    in_flight = replaycompare.steps([(s.t, s.in_flight) for s in samples])
    points = replaycompare.capacity_latencies(desired, in_flight, slots)
    a, b = replaycompare.latency_line(points)
    fixed = measured["first_task_median_s"] or measured["pod_ready_median_s"] or 0.0
    # Little's law over the run: time in flight summed over every task, per task.
    effective = replaycompare.integral(in_flight, end) / len(arrivals)

    def grows(n: int) -> float:
        return a + b * n

    sims = {
        f"simulated, start {a:.2f}+{b:.2f}/pod s": _simulate(
            arrivals, spec, latency=grows, end=end
        ),
        f"simulated, start {fixed:.2f} s": _simulate(arrivals, spec, latency=fixed, end=end),
    }
    curves: dict[str, replaycompare.Curve] = {
        "real": desired,
        **{who: result.replica_curve for who, (result, _) in sims.items()},
    }
    rows = replaycompare.report_rows(curves, arrivals, end)
    for who in sims:
        dev = replaycompare.deviation(desired, curves[who], end)
        rows.append(
            {
                "contender": f"real vs {who}",
                "case": "deviation",
                "metrics": {k: round(v, 3) for k, v in asdict(dev).items()},
            }
        )
    band = [
        replaycompare.deviation(
            desired,
            replaycompare.shift(
                _simulate([t + p for t in arrivals], spec, latency=grows, end=end + p)[
                    0
                ].replica_curve,
                -p,
            ),
            end,
        )
        for p in PHASES
    ]
    rows.append(
        {
            "contender": "real vs simulated, a+b/pod",
            "case": f"poll phase {PHASES[0]:g}-{PHASES[-1]:g} s",
            "metrics": {
                "mean_abs_diff_min": round(min(d.mean_abs_diff for d in band), 3),
                "mean_abs_diff_max": round(max(d.mean_abs_diff for d in band), 3),
                "replica_s_ratio_min": round(min(d.replica_s_ratio for d in band), 3),
                "replica_s_ratio_max": round(max(d.replica_s_ratio for d in band), 3),
            },
        }
    )
    environment: dict[str, float] = {
        "tasks": float(len(arrivals)),
        "poll_interval_s": _poll(spec),
        "task_in_flight_mean_s": round(effective, 3),
        "start_a_s": round(a, 3),
        "start_b_s_per_pod": round(b, 3),
        **{k: round(v, 2) for k, v in measured.items() if v is not None},
    }
    rows.append({"contender": "environment", "case": "measured", "metrics": environment})
    details: dict[str, Any] = {
        "command": "python -m bench -w autoscale-replay",
        "arrivals": len(arrivals),
        "bursts": replaycompare.bursts(arrivals),
        "end_s": end,
        "start_points": points,
        "curves": {k: list(v) for k, v in curves.items()},
        "ready": replaycompare.steps([(s.t, s.deployment_ready) for s in samples]),
        "simulated_polls": {who: polls for who, (_, polls) in sims.items()},
        "real_task_seconds": replaycompare.steps(
            [(s.t, s.task_seconds) for s in samples if s.task_seconds is not None]  # type: ignore[misc]
        ),
        "samples": [asdict(s) for s in samples],
    }
    return rows, details


def _poll(spec: WorkerPoolSpec) -> float:
    auto = spec.autoscaling
    assert auto is not None
    return parse_duration(auto.poll_interval)


class _Recorded:
    """The simulator's Celeriac controller, keeping what each poll saw and decided."""

    def __init__(self, inner: autoscalesim.Celeriac) -> None:
        self.inner, self.name, self.interval = inner, inner.name, inner.interval
        self.polls: list[tuple[float, int, int, int, float | None]] = []

    def tick(self, view: autoscalesim.PoolView) -> int:
        """The inner controller's poll; (t, waiting, in flight, replicas, task s) kept."""
        replicas = self.inner.tick(view)
        seconds = self.inner.state.task_seconds
        self.polls.append((view.now, view.pending, view.in_flight, replicas, seconds))
        return replicas


def _simulate(
    arrivals: list[float],
    spec: WorkerPoolSpec,
    *,
    latency: autoscalesim.StartLatency,
    end: float,
    mean_task: float = MEAN_TASK,
) -> tuple[autoscalesim.Result, list[tuple[float, int, int, int, float | None]]]:
    """The simulator on the replayed arrivals with the pool's own settings."""
    settings = ScalingSettings.from_spec(spec)
    controller = _Recorded(autoscalesim.Celeriac(settings, poll=_poll(spec)))
    result = autoscalesim.simulate(
        arrivals,
        controller,
        start_latency=latency,
        slots=settings.slots,
        mean_task=mean_task,
        seed=SEED,
        tail=end - arrivals[-1],
        warmup=0.0,
    )
    return result, controller.polls


def _scale_events(kube: kubeenv.Kube, ns: str, pool: str) -> list[str]:
    """The operator's Scaled events for the pool (their reasons), oldest first."""
    listing = kube.core.list_namespaced_event(
        ns, field_selector=f"involvedObject.name={pool},reason=Scaled"
    )
    items = sorted(listing.items, key=lambda e: str(e.first_timestamp or e.event_time or ""))
    return [f"{e.first_timestamp or e.event_time}: {e.message}" for e in items]


def _submit(app: Celeriac, arrivals: list[float], durations: list[float], t0: float) -> float:
    """Send each task at its arrival time (those due together in one batch); the most
    any batch was late, in seconds."""
    late, i, n = 0.0, 0, len(arrivals)
    while i < n:
        now = time.monotonic() - t0
        if arrivals[i] > now:
            time.sleep(min(arrivals[i] - now, 0.05))
            continue
        j = i
        while j < n and arrivals[j] <= now:
            j += 1
        late = max(late, now - arrivals[i])
        app.send_many([app.signature("bench.asleep", [durations[k]]) for k in range(i, j)])
        i = j
    return late


def start_latencies(samples: list[Sample]) -> dict[str, float | None]:
    """Pod start in this environment: Deployment scale-up to pod Ready (every rise), and
    scale-up from zero to the first task running (a worker process consuming)."""
    desired = replaycompare.steps([(s.t, s.deployment) for s in samples])
    ready = replaycompare.steps([(s.t, s.deployment_ready) for s in samples])
    pod_ready = replaycompare.rise_latencies(desired, ready)
    busy = replaycompare.steps([(s.t, 1 if s.in_flight > 0 else 0) for s in samples])
    first_task = replaycompare.rise_latencies(
        [(t, 1 if v else 0) for t, v in desired], busy, from_zero_only=True
    )

    def median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    return {
        "pod_ready_median_s": median(pod_ready),
        "pod_ready_max_s": max(pod_ready) if pod_ready else None,
        "first_task_median_s": median(first_task),
        "first_task_max_s": max(first_task) if first_task else None,
    }


def chart(details: dict[str, Any], path: Path) -> None:
    """The replica curves over the trace (bursts shaded), and under them the policy's
    task-duration estimate in the real operator and in the simulator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = float(details["end_s"])
    fig, (top, low) = plt.subplots(
        2, 1, figsize=(10, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]}
    )
    for ax in (top, low):
        for first, last in details["bursts"]:
            ax.axvspan(first, last + 0.5, color="#e9c46a", alpha=0.5, linewidth=0)
    colors = iter(["#e76f51", "#9b5de5", "#8d99ae"])
    lines = {"real: Deployment replicas": (details["curves"]["real"], "#2a9d8f", "-", 1.6)}
    lines["real: pods Ready"] = (details["ready"], "#264653", "-", 0.7)
    for who, curve in details["curves"].items():
        if who != "real":
            lines[who] = (curve, next(colors), "--", 1.3)
    for label, (curve, color, style, width) in lines.items():
        _step(top, curve, end, color=color, linestyle=style, linewidth=width, label=label)
    top.set_ylim(-0.2, MAX_REPLICAS + 0.5)
    top.set_ylabel("replicas", fontsize=8)
    top.set_title("autoscale-replay: kwok + pod runner vs simulator", fontsize=9, loc="left")
    top.legend(fontsize=7, loc="upper right")
    _step(low, details["real_task_seconds"], end, color="#2a9d8f", label="real operator")
    for (who, polls), color in zip(
        details["simulated_polls"].items(), ["#e76f51", "#9b5de5"], strict=False
    ):
        estimate = [(p[0], p[4]) for p in polls if p[4] is not None]
        _step(low, estimate, end, color=color, linestyle="--", label=who)
    low.axhline(MEAN_TASK, color="#555555", linewidth=0.7, linestyle=":", label="true mean")
    low.set_ylabel("taskSeconds", fontsize=8)
    low.set_xlabel("seconds (shaded: bursts)", fontsize=8)
    low.legend(fontsize=6, loc="upper right")
    for ax in (top, low):
        ax.set_xlim(0, end)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _step(ax: Any, curve: Any, end: float, **style: Any) -> None:
    points = list(curve)
    if not points:
        return
    xs = [t for t, _ in points] + [end]
    ys = [v for _, v in points] + [points[-1][1]]
    ax.step(xs, ys, where="post", **style)


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)
