"""A trace-driven autoscaling simulator: Celeriac's real policy against a KEDA + HPA model.

Discrete-event and seeded, so a run is exact and repeatable. Tasks arrive from a trace
into one FIFO queue; pods have ``slots`` task slots each and take ``start_latency``
seconds from the scale request to ready; task durations are exponential. A controller
is polled at its own interval with what a real one would see (tasks waiting, tasks in
flight, the desired replica count, counters of tasks completed and arrived) and returns
the desired replica count.

Scaling down picks pods that are not ready yet first, then the ready pods running the
fewest tasks. A removed pod takes no new task; the tasks it runs finish (a worker's
graceful stop) and the pod is billed until its last one does.

Metrics: replica-seconds (every pod from its scale request until it is gone), queueing
delay percentiles (task start minus arrival), scale events, direction reversals per hour
after a warm-up ("flaps"), and for every quiet gap of the trace (no arrival for 60 s),
the time from the queue emptying to one replica or fewer.

Another harness (a real control plane) can replay the same trace with
``trace(name, seed, duration)`` and compare its replica curve with
``simulate(...).replica_curve``.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from celeriac.operator.autoscaling import (
    Decision,
    Observation,
    ScalingSettings,
    ScalingState,
    decide,
)

INF = float("inf")
# A gap without arrivals this long counts as "the queue emptied" for time-to-one.
QUIET_GAP = 60.0
STEADY_RATES = (10, 50, 100, 200, 500)
TRACES = ("bursty", "diurnal", *(f"steady-{r}" for r in STEADY_RATES))
START_LATENCIES = (2.0, 5.0, 20.0)


# ---------------------------------------------------------------------------- traces


def trace(name: str, seed: int = 1, duration: float | None = None) -> list[float]:
    """Sorted arrival times (seconds from 0) of a named, seeded trace.

    ``bursty``: idle, then bursts of 500-5,000 tasks each arriving within 2 s, about
    every 4 minutes (1 h by default). ``diurnal``: a day's curve compressed into the run
    (5 to 150 tasks/s, peaking mid-run) with a burst of 1,000-3,000 tasks every ~10
    minutes (1 h). ``steady-R``: Poisson arrivals at R tasks/s (1 h).
    """
    rng = random.Random(f"{name}/{seed}")
    if name == "bursty":
        return _bursty(rng, duration or 3600.0)
    if name == "diurnal":
        return _diurnal(rng, duration or 3600.0)
    if name.startswith("steady-"):
        return _poisson(rng, float(name.removeprefix("steady-")), 0.0, duration or 3600.0)
    raise ValueError(f"unknown trace {name!r}: choose from {', '.join(TRACES)}")


def _poisson(rng: random.Random, rate: float, start: float, end: float) -> list[float]:
    out: list[float] = []
    t = start
    while True:
        t += rng.expovariate(rate)
        if t >= end:
            return out
        out.append(t)


def _burst(rng: random.Random, at: float, size: int, spread: float = 2.0) -> list[float]:
    return [at + rng.uniform(0.0, spread) for _ in range(size)]


def _bursty(rng: random.Random, duration: float) -> list[float]:
    out: list[float] = []
    t = 30.0 + rng.uniform(0, 60)
    while t < duration - 60:
        out += _burst(rng, t, rng.randint(500, 5000))
        t += rng.uniform(90, 390)
    return sorted(out)


def _diurnal(rng: random.Random, duration: float) -> list[float]:
    low, high = 5.0, 150.0

    def rate(t: float) -> float:
        return low + (high - low) * 0.5 * (1 - math.cos(2 * math.pi * t / duration))

    # Thinning: candidates at the peak rate, each kept with probability rate(t)/high.
    out = [t for t in _poisson(rng, high, 0.0, duration) if rng.random() * high < rate(t)]
    t = rng.uniform(60, 600)
    while t < duration - 60:
        out += _burst(rng, t, rng.randint(1000, 3000))
        t += rng.uniform(300, 900)
    return sorted(out)


# ---------------------------------------------------------------------------- controllers


@dataclass(frozen=True)
class PoolView:
    """What a controller sees at one poll."""

    now: float
    pending: int
    in_flight: int
    replicas: int
    completed: int
    arrived: int
    ready: int


class Controller(Protocol):
    """Something that sets the replica count: called every ``interval`` seconds."""

    name: str
    interval: float

    def tick(self, view: PoolView) -> int:
        """The desired replica count after this poll."""
        ...


DecideFn = Callable[[Observation, ScalingSettings, ScalingState], Decision]


class Celeriac:
    """The operator's poll: builds the Observation workerpools.py builds, calls decide()."""

    def __init__(
        self,
        settings: ScalingSettings,
        *,
        poll: float = 2.0,
        name: str = "celeriac",
        decide_fn: DecideFn = decide,
    ) -> None:
        self.name, self.interval, self.settings = name, poll, settings
        self.decide = decide_fn
        self.state = ScalingState()
        self._last: PoolView | None = None

    def tick(self, view: PoolView) -> int:
        """One poll: the completion rate as the operator measures it (since last poll)."""
        obs = _observation(view, self._last)
        self._last = view
        decision = self.decide(obs, self.settings, self.state)
        self.state = decision.state
        return decision.replicas


def _observation(view: PoolView, last: PoolView | None) -> Observation:
    """The Observation workerpools.py builds: rates since the previous poll."""
    span = view.now - last.now if last is not None else 0.0
    return Observation(
        pending=view.pending,
        ack_pending=view.in_flight,
        current_replicas=view.replicas,
        now=view.now,
        completion_rate=(view.completed - last.completed) / span if last and span > 0 else None,
        previous_in_flight=last.in_flight if last and span > 0 else None,
        ready_replicas=view.ready,
        arrival_rate=(view.arrived - last.arrived) / span if last and span > 0 else None,
    )


@dataclass
class Keda:
    """KEDA's nats-jetstream scaler driving an HPA, from their documented defaults.

    KEDA polls every ``polling`` s: lag (pending + ack pending) above the activation
    threshold (0) activates the target (0 -> 1 replica); inactive for ``cooldown`` s scales
    it to 0. Between 1 and max the HPA acts every ``sync`` s on the lag as an
    AverageValue external metric of ``lag_threshold`` per replica: desired =
    ceil(lag / lag_threshold), unchanged within a 10% tolerance; scale up at most to
    max(2x, +4 pods) per sync; scale down to the highest recommendation of the last
    ``down_window`` s.
    """

    name: str = "keda-default"
    polling: float = 30.0
    cooldown: float = 300.0
    sync: float = 15.0
    down_window: float = 300.0
    lag_threshold: float = 10.0
    tolerance: float = 0.1
    max_replicas: int = 20
    interval: float = field(init=False)
    _recs: list[tuple[float, int]] = field(default_factory=list)
    _last_active: float = -INF
    _t0: float | None = None

    def __post_init__(self) -> None:
        self.interval = math.gcd(int(self.polling), int(self.sync)) or 1.0

    def tick(self, view: PoolView) -> int:
        """One tick: a KEDA poll and/or an HPA sync, whichever falls due now."""
        now, current = view.now, view.replicas
        lag = view.pending + view.in_flight
        if _due(now, self.polling):
            if lag > 0:
                self._last_active = now
                if current == 0:
                    return 1
            elif current > 0 and now - self._last_active >= self.cooldown:
                self._recs.clear()
                return 0
        if current == 0 or not _due(now, self.sync):
            return current
        return self._hpa(now, current, lag)

    def _hpa(self, now: float, current: int, lag: int) -> int:
        ratio = lag / (current * self.lag_threshold)
        if abs(ratio - 1.0) <= self.tolerance:
            rec = current
        else:
            rec = max(1, min(self.max_replicas, math.ceil(lag / self.lag_threshold)))
        self._recs = [(t, r) for t, r in self._recs if now - t < self.down_window]
        self._recs.append((now, rec))
        if rec > current:
            # Scale up: no stabilization, at most max(+100%, +4 pods) per period.
            return min(rec, max(2 * current, current + 4), self.max_replicas)
        # Scale down: the highest recommendation of the window, if below the current count.
        return min(current, max(r for _, r in self._recs))


def _due(now: float, every: float) -> bool:
    return abs(now / every - round(now / every)) < 1e-6


def keda_tuned(max_replicas: int = 20) -> Keda:
    """KEDA as a user tuning it for a task queue: 5 s polling, 60 s cooldown and window."""
    return Keda(
        "keda-tuned", polling=5.0, cooldown=60.0, down_window=60.0, max_replicas=max_replicas
    )


# ---------------------------------------------------------------------------- engine


@dataclass
class _Pod:
    requested: float
    ready_at: float
    busy: int = 0
    ready: bool = False
    removed: bool = False
    gone_at: float | None = None


@dataclass
class Result:
    """What one simulation measured."""

    replica_seconds: float
    # The same from the end of the warm-up on (a steady load's cost without the cold start).
    replica_seconds_after_warmup: float
    work_seconds: float
    delays: list[float]
    scale_events: int
    reversals: int
    flaps_per_hour: float
    time_to_one: list[float]
    replica_curve: list[tuple[float, int]]
    pods_started: int
    pods_idle: int
    tasks: int
    slots: int = 10

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100) of the queueing delays, in seconds."""
        if not self.delays:
            return 0.0
        ordered = sorted(self.delays)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    def summary(self) -> dict[str, float]:
        """The metrics as one flat row."""
        ordered = sorted(self.delays)

        def pct(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0.0

        return {
            "replica_s": round(self.replica_seconds, 1),
            "replica_s_after_warmup": round(self.replica_seconds_after_warmup, 1),
            "busy_pct": round(
                100 * self.work_seconds / max(self.replica_seconds * self.slots, 1e-9), 1
            ),
            "p50_s": round(pct(50), 3),
            "p95_s": round(pct(95), 3),
            "p99_s": round(pct(99), 3),
            "scale_events": self.scale_events,
            "flaps_per_h": round(self.flaps_per_hour, 1),
            "to_one_mean_s": round(sum(self.time_to_one) / len(self.time_to_one), 1)
            if self.time_to_one
            else 0.0,
            "to_one_max_s": round(max(self.time_to_one), 1) if self.time_to_one else 0.0,
            "pods_started": self.pods_started,
            "pods_never_used": self.pods_idle,
        }


# Seconds from a scale request to ready: fixed, or a function of how many pods that one
# scale-up starts (on a small machine, pods starting together compete for its CPUs).
StartLatency = float | Callable[[int], float]


def simulate(
    arrivals: Sequence[float],
    controller: Controller,
    *,
    start_latency: StartLatency = 5.0,
    slots: int = 10,
    mean_task: float = 0.2,
    seed: int = 1,
    tail: float = 400.0,
    warmup: float = 300.0,
) -> Result:
    """Run ``arrivals`` through a pool scaled by ``controller``; see the module docstring.

    The run goes on ``tail`` seconds after the last arrival so the pool can scale down;
    flaps count direction reversals after ``warmup`` seconds and before the last arrival.
    """
    engine = _Engine(controller, start_latency, slots, mean_task, seed)
    last = arrivals[-1] if arrivals else 0.0
    engine.run(arrivals, last + tail)
    return engine.result(arrivals, last + tail, warmup)


class _Engine:
    """The event loop's state: pods, free slots, the queue, running tasks."""

    def __init__(
        self,
        controller: Controller,
        start_latency: StartLatency,
        slots: int,
        mean_task: float,
        seed: int,
    ) -> None:
        self.controller, self.start_latency, self.slots = controller, start_latency, slots
        self.expo = random.Random(seed).expovariate
        self.service_rate = 1.0 / mean_task
        self.pods: list[_Pod] = []
        self.used: set[int] = set()
        self.free: list[int] = []  # one entry per free slot: the pod's index
        self.done: list[tuple[float, int]] = []  # (finish time, pod index)
        self.booting: list[tuple[float, int]] = []  # (ready time, pod index)
        self.queue: deque[float] = deque()  # arrival times of the waiting tasks
        self.delays: list[float] = []
        self.starts: list[float] = []
        self.work = 0.0
        self.completed = 0
        self.in_flight = 0
        self.desired = 0
        self.curve: list[tuple[float, int]] = [(0.0, 0)]
        self.moves: list[tuple[float, int]] = []

    def run(self, arrivals: Sequence[float], end: float) -> None:
        """Process every event up to ``end``."""
        i, n = 0, len(arrivals)
        next_poll = self.controller.interval
        done, booting = self.done, self.booting
        while True:
            t_arr = arrivals[i] if i < n else INF
            t_done = done[0][0] if done else INF
            t_boot = booting[0][0] if booting else INF
            t = min(t_arr, t_done, t_boot, next_poll)
            if t > end:
                return
            if t == t_done:
                self.finish(t)
            elif t == t_boot:
                self.ready(t)
            elif t == t_arr:
                i += 1
                if self.free:
                    self.start(t, t)
                else:
                    self.queue.append(t)
            else:
                self.poll(t)
                next_poll = t + self.controller.interval

    def start(self, now: float, arrived: float) -> None:
        """Start a task on a free slot."""
        p = self.free.pop()
        self.pods[p].busy += 1
        self.used.add(p)
        self.in_flight += 1
        d = self.expo(self.service_rate)
        self.work += d
        self.delays.append(now - arrived)
        self.starts.append(now)
        heapq.heappush(self.done, (now + d, p))

    def finish(self, now: float) -> None:
        """A task ends: its slot takes the next waiting task, or its removed pod may go."""
        _, p = heapq.heappop(self.done)
        pod = self.pods[p]
        pod.busy -= 1
        self.in_flight -= 1
        self.completed += 1
        if pod.removed:
            if pod.busy == 0:
                pod.gone_at = now
            return
        self.free.append(p)
        if self.queue:
            self.start(now, self.queue.popleft())

    def ready(self, now: float) -> None:
        """A pod becomes ready: its slots take waiting tasks."""
        _, p = heapq.heappop(self.booting)
        pod = self.pods[p]
        if pod.removed:
            return
        pod.ready = True
        self.free.extend([p] * self.slots)
        while self.queue and self.free:
            self.start(now, self.queue.popleft())

    def poll(self, now: float) -> None:
        """The controller's poll, and the scaling it asks for."""
        pending = len(self.queue)
        arrived = self.completed + self.in_flight + pending
        ready = sum(1 for pod in self.pods if pod.ready and not pod.removed)
        view = PoolView(now, pending, self.in_flight, self.desired, self.completed, arrived, ready)
        target = self.controller.tick(view)
        if target == self.desired:
            return
        self.moves.append((now, 1 if target > self.desired else -1))
        if target > self.desired:
            added = target - self.desired
            latency = self.start_latency
            ready_at = now + (latency(added) if callable(latency) else latency)
            for _ in range(added):
                self.pods.append(_Pod(requested=now, ready_at=ready_at))
                heapq.heappush(self.booting, (ready_at, len(self.pods) - 1))
        else:
            pods = self.pods
            live = [k for k, pod in enumerate(pods) if not pod.removed]
            # Not ready first (newest first), then the ready pods running the fewest tasks.
            live.sort(key=lambda k: (pods[k].ready, pods[k].busy, -k))
            for k in live[: self.desired - target]:
                pods[k].removed = True
                if pods[k].busy == 0:
                    pods[k].gone_at = now
            self.free = [k for k in self.free if not pods[k].removed]
        self.desired = target
        self.curve.append((now, target))

    def result(self, arrivals: Sequence[float], end: float, warmup: float) -> Result:
        """The metrics of the run."""

        def gone(pod: _Pod) -> float:
            return pod.gone_at if pod.gone_at is not None else end

        last = arrivals[-1] if arrivals else 0.0
        window = [(t, s) for t, s in self.moves if warmup <= t <= last]
        reversals = sum(1 for a, b in itertools.pairwise(window) if a[1] != b[1])
        return Result(
            replica_seconds=sum(gone(p) - p.requested for p in self.pods),
            replica_seconds_after_warmup=sum(
                max(0.0, gone(p) - max(p.requested, warmup)) for p in self.pods
            ),
            work_seconds=self.work,
            delays=self.delays,
            scale_events=len(self.moves),
            reversals=reversals,
            flaps_per_hour=reversals * 3600.0 / max(last - warmup, 1.0),
            time_to_one=_time_to_one(arrivals, self.starts, self.curve),
            replica_curve=self.curve,
            pods_started=len(self.pods),
            pods_idle=len(self.pods) - len(self.used),
            tasks=len(self.delays),
            slots=self.slots,
        )


def _time_to_one(
    arrivals: Sequence[float], starts: Sequence[float], curve: Sequence[tuple[float, int]]
) -> list[float]:
    """For each quiet gap: seconds from the queue emptying to one replica or fewer."""
    out = []
    for k in range(len(arrivals)):
        gap_end = arrivals[k + 1] if k + 1 < len(arrivals) else INF
        if gap_end - arrivals[k] < QUIET_GAP or k >= len(starts):
            continue
        # FIFO: the queue is empty once the last task before the gap has started.
        emptied = starts[k]
        level = _level_at(curve, emptied)
        if level <= 1:
            out.append(0.0)
            continue
        reached = next((t for t, r in curve if emptied < t < gap_end and r <= 1), None)
        if reached is not None:
            out.append(reached - emptied)
        elif gap_end < INF:
            out.append(gap_end - emptied)  # censored: the next work came first
    return out


def _level_at(curve: Sequence[tuple[float, int]], t: float) -> int:
    level = 0
    for when, r in curve:
        if when > t:
            break
        level = r
    return level


# ---------------------------------------------------------------------------- sweep


def default_settings(max_replicas: int = 20) -> ScalingSettings:
    """A WorkerPool's defaults (concurrency 10) with min 0 / max ``max_replicas``."""
    from celeriac.protocol.resources import WorkerPoolSpec

    spec = WorkerPoolSpec.model_validate(
        {
            "queues": ["q"],
            "app": "m",
            "image": "i",
            "concurrency": 10,
            "autoscaling": {"minReplicas": 0, "maxReplicas": max_replicas},
        }
    )
    return ScalingSettings.from_spec(spec)


ControllerFactory = Callable[[], Controller]


def controllers(max_replicas: int = 20) -> dict[str, ControllerFactory]:
    """The contenders: Celeriac with default settings, KEDA default and tuned."""
    return {
        "celeriac": lambda: Celeriac(default_settings(max_replicas)),
        "keda-default": lambda: Keda(max_replicas=max_replicas),
        "keda-tuned": lambda: keda_tuned(max_replicas),
    }


def sweep(
    traces: Sequence[str] = TRACES,
    latencies: Sequence[float] = START_LATENCIES,
    *,
    seed: int = 1,
    quick: bool = False,
    contenders: dict[str, ControllerFactory] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, object]], dict[str, dict[str, list[tuple[float, int]]]]]:
    """Every trace x start latency x contender: result rows, and replica curves at 5 s."""
    rows: list[dict[str, object]] = []
    curves: dict[str, dict[str, list[tuple[float, int]]]] = {}
    for name in traces:
        duration = None
        if quick:
            duration = 900.0 if not name.startswith("steady") else 600.0
        arrivals = trace(name, seed, duration)
        for latency in latencies:
            for who, make in (contenders or controllers()).items():
                res = simulate(arrivals, make(), start_latency=latency, seed=seed)
                row: dict[str, object] = {
                    "contender": who,
                    "case": f"{name} start {latency:g}s",
                    "trace": name,
                    "start_latency_s": latency,
                    "tasks": res.tasks,
                    "metrics": res.summary(),
                }
                rows.append(row)
                if latency == 5.0:
                    curves.setdefault(name, {})[who] = res.replica_curve
                if progress:
                    shown = ", ".join(f"{k}={v}" for k, v in res.summary().items())
                    progress(f"    {who:<13} {row['case']:<24} {shown}")
    return rows, curves


# ---------------------------------------------------------------------------- targets


def _row(rows: Sequence[dict[str, Any]], who: str, name: str, latency: float) -> dict[str, Any]:
    for r in rows:
        if r["contender"] == who and r["trace"] == name and r["start_latency_s"] == latency:
            return dict(r["metrics"])
    raise KeyError(f"no row for {who} on {name} at {latency:g}s")


def verdicts(rows: Sequence[dict[str, Any]], latency: float = 5.0) -> list[dict[str, Any]]:
    """The issue's targets for Celeriac at ``latency`` s pod start, each with its value."""
    out: list[dict[str, Any]] = []

    def add(target: str, value: float, ok: bool) -> None:
        out.append(
            {"target": target, "value": round(value, 3), "verdict": "met" if ok else "NOT MET"}
        )

    names = {r["trace"] for r in rows if r["start_latency_s"] == latency}
    for name in ("bursty", "diurnal"):
        if name in names:
            ours, keda = (
                _row(rows, "celeriac", name, latency),
                _row(rows, "keda-default", name, latency),
            )
            cost = ours["replica_s"] / keda["replica_s"]
            add(f"{name}: replica-s / KEDA default <= 0.5", cost, cost <= 0.5)
    if "bursty" in names:
        ours, keda = (
            _row(rows, "celeriac", "bursty", latency),
            _row(rows, "keda-default", "bursty", latency),
        )
        lower = keda["p95_s"] / max(ours["p95_s"], 1e-9)
        add("bursty: p95 queueing delay x lower than KEDA default >= 5", lower, lower >= 5)
        add("bursty: time to one replica after the queue empties <= 60 s (max)",
            ours["to_one_max_s"], ours["to_one_max_s"] <= 60.0)  # fmt: skip
    for name in sorted((n for n in names if n.startswith("steady-")), key=lambda n: int(n[7:])):
        ours, keda = (
            _row(rows, "celeriac", name, latency),
            _row(rows, "keda-default", name, latency),
        )
        add(f"{name}: flaps per hour == 0", ours["flaps_per_h"], ours["flaps_per_h"] == 0)
        cost = ours["replica_s_after_warmup"] / keda["replica_s_after_warmup"]
        add(f"{name}: replica-s after warm-up / KEDA default <= 1", cost, cost <= 1.0)
    return out
