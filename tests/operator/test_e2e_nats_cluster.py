"""The operator on a 3-node JetStream cluster: leader kills keep status and autoscaling right.

A control plane of this module's own runs an operator whose NATS is the session's
3-node cluster (its seed list), with the shared buckets at 3 replicas. A TaskQueue
with ``replicas: 3`` and an autoscaled WorkerPool (0 to 3 replicas) serve a few
thousand tasks submitted through the SDK with the seed list; the pool's workers
are local processes started by the pod runner.

While tasks are pending, the node leading the work stream is SIGKILLed; the
TaskQueue's status backlog must be updated again with a figure that agrees with
the consumer's ``num_pending`` read live from the cluster. The node is started
again, the status must go on being updated, and then the same happens to the
node leading the consumer. Every task must end SUCCESS with its result, and the
pool must scale back to zero once the queue drained. The figures (tasks lost,
extra deliveries, time from each kill until the status was right again, time to
scale to zero) are printed.

The producer keeps the backlog topped up until both kills are over, so tasks are
pending through every kill however fast the machine is. Each kill comes right after
a status refresh (every 5 s), so the next refresh falls in the leader election and
times out: the time until the status is right again is near its worst case.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from celeriac_devenv.cluster import KubeEnvironment
from celeriac_devenv.nats import NatsCluster, NatsServer
from nats.js import JetStreamContext

from celeriac.app import Celeriac
from celeriac.exceptions import CeleriacError
from celeriac.protocol import names
from celeriac.protocol.states import TaskState
from tests.operator.conftest import OperatorProcess, own_control_plane
from tests.operator.kubeobjects import condition, get
from tests.support import await_until, read_results, wait_until

pytestmark = pytest.mark.e2e

APPS = Path(__file__).parent / "apps"
TASK = "opscale.square"  # sleeps 20 ms, returns x * x
REPLICAS = 3
MAX_WORKERS = 3
# Seconds from the operator's read of the consumer until this test sees the patched
# status (the patch, then one status poll of this test and its kubectl call).
STATUS_LAG = 4.0
# Tasks that may complete between two live samples of the consumer.
SLACK = 40


@dataclass(frozen=True)
class Load:
    """How many tasks, and how the producer paces them."""

    first: int = 1200  # submitted at once: the pool scales up from zero
    low: int = 400  # until the kills are over, top the backlog up when it is below this...
    chunk: int = 300  # ...by this many tasks
    most: int = 8000  # never more than this in all


LOAD = Load()


# Fixtures: a control plane whose operator talks to the NATS cluster ------------------------


@pytest.fixture(scope="module")
def cluster_kube(
    nats_cluster: NatsCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeEnvironment]:
    """A control plane of this module's own, without a NATS of its own, CRDs installed."""
    with own_control_plane(tmp_path_factory.mktemp("kube-nats-cluster")) as env:
        yield env


@pytest.fixture(scope="module")
def cluster_operator(
    cluster_kube: KubeEnvironment,
    nats_cluster: NatsCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The operator with the cluster's seed list and 3-replica buckets."""
    nats_cluster.wait_ready()  # whole and settled after an earlier test's kills
    proc = OperatorProcess(
        cluster_kube,
        tmp_path_factory.mktemp("operator-nats-cluster"),
        nats_url=nats_cluster.urls,
        args=("--bucket-replicas", str(REPLICAS)),
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def cluster_namespace(cluster_kube: KubeEnvironment) -> Iterator[str]:
    name = f"nc-{uuid.uuid4().hex[:8]}"
    cluster_kube.kubectl("create", "namespace", name)
    yield name
    cluster_kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def cluster_tasks(nats_cluster: NatsCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The workers' task module, its app reading the seed list when imported."""
    monkeypatch.setenv("CELERIAC_NATS_URL", nats_cluster.urls)
    monkeypatch.setenv("CELERIAC_DECLARE_QUEUES", "0")  # the operator owns the queue
    monkeypatch.syspath_prepend(str(APPS))
    sys.modules.pop("opscale_tasks", None)
    import opscale_tasks

    yield opscale_tasks
    opscale_tasks.app.close()
    sys.modules.pop("opscale_tasks", None)


# Live readings: the consumer from the cluster, the status from the API server --------------


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    pending: int
    ack_pending: int


@dataclass
class Live:
    """The queue's consumer, read from whichever node the client is connected to."""

    js: JetStreamContext  # with a short timeout: a read must not hide a stall
    stream: str
    samples: list[Sample] = field(default_factory=list)

    async def read(self) -> Sample:
        info = await self.js.consumer_info(self.stream, names.CONSUMER_NAME)
        return Sample(time.monotonic(), int(info.num_pending), int(info.num_ack_pending))

    async def follow(self, stop: asyncio.Event) -> None:
        """Sample until ``stop``; a failed read (no leader, reconnecting) is skipped."""
        while not stop.is_set():
            with contextlib.suppress(Exception):
                self.samples.append(await self.read())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.1)

    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def agrees(self, backlog: int, start: float, end: float) -> bool | None:
        """Whether ``backlog`` is what the consumer showed at some moment from ``start`` to
        ``end``: between two successive samples (tasks complete, and top-ups arrive, in
        between), give or take SLACK; None without a sample then."""
        window = [s.pending for s in self.samples if start <= s.at <= end]
        if not window:
            return None
        pairs = itertools.pairwise([window[0], *window])  # a lone sample pairs with itself
        return any(min(a, b) - SLACK <= backlog <= max(a, b) + SLACK for a, b in pairs)

    def nearest(self, backlog: int, start: float, end: float) -> int | None:
        """The sampled ``num_pending`` from ``start`` to ``end`` closest to ``backlog``."""
        window = [s.pending for s in self.samples if start <= s.at <= end]
        return min(window, key=lambda p: abs(p - backlog)) if window else None

    async def leader(self, what: str) -> str:
        """The server name of the node leading the work stream or the consumer."""
        if what == "stream":
            cluster = (await self.js.stream_info(self.stream)).cluster
        else:
            cluster = (await self.js.consumer_info(self.stream, names.CONSUMER_NAME)).cluster
        assert cluster is not None and cluster.leader, f"no {what} leader yet"
        return str(cluster.leader)


@dataclass(frozen=True)
class Seen:
    """A TaskQueue status this test saw with a backlog different from the one before."""

    at: float  # time.monotonic() when it was seen
    backlog: int | None
    ready: str  # the Ready condition's reason


@dataclass
class StatusLog:
    """The TaskQueue's status backlog as it changes, polled from the API server."""

    kube: KubeEnvironment
    namespace: str
    name: str
    changes: list[Seen] = field(default_factory=list)
    # Every Ready condition seen, in order: (seen at, status/reason, message).
    readiness: list[tuple[float, str, str]] = field(default_factory=list)

    async def follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                obj = await asyncio.to_thread(get, self.kube, self.namespace, "tq", self.name)
                self._note(obj, time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.25)

    def _note(self, obj: dict[str, Any] | None, at: float) -> None:
        if obj is None:
            return
        backlog = (obj.get("status") or {}).get("backlog")
        ready = condition(obj, "Ready") or {}
        reason = f"{ready.get('status')}/{ready.get('reason')}"
        if not self.readiness or self.readiness[-1][1] != reason:
            self.readiness.append((at, reason, str(ready.get("message"))[:120]))
        if not self.changes or self.changes[-1].backlog != backlog:
            self.changes.append(Seen(at, backlog, reason))

    def agreeing_since(self, live: Live, since: float) -> list[Seen]:
        """Status changes seen after ``since`` whose backlog agrees with the consumer's
        ``num_pending`` sampled after ``since`` in the moments before they were seen."""
        return [
            seen
            for seen in self.changes
            if seen.at > since
            and seen.backlog is not None
            and live.agrees(seen.backlog, max(since, seen.at - STATUS_LAG), seen.at)
        ]

    def disagreeing(self, live: Live) -> list[tuple[Seen, int | None]]:
        """Changes whose backlog the consumer never showed in the moments before (with
        the sampled value closest to it)."""
        return [
            (seen, live.nearest(seen.backlog, seen.at - STATUS_LAG, seen.at))
            for seen in self.changes
            if seen.backlog is not None
            and live.agrees(seen.backlog, seen.at - STATUS_LAG, seen.at) is False
        ]


# The run --------------------------------------------------------------------------------------


@dataclass
class Kill:
    """One leader SIGKILLed and how the operator's status got over it."""

    what: str  # "stream" or "consumer"
    node: str
    at: float
    pending: int  # num_pending just before the kill
    elected: float = 0.0  # seconds until another node led
    status: float = 0.0  # seconds until the status backlog was right again
    back: float = 0.0  # seconds until the restarted node was current and the cluster whole
    after_rejoin: float = 0.0  # seconds from then until the status was updated again


@dataclass
class Run:
    app: Celeriac
    queue: str
    cluster: NatsCluster
    live: Live
    status: StatusLog
    ids: list[str]
    kills: list[Kill] = field(default_factory=list)
    submitted: int = 0  # tasks confirmed as enqueued (ids[:submitted])
    resubmitted: set[str] = field(default_factory=set)
    submit_errors: int = 0
    first_error: str = ""
    kills_over: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.monotonic)

    async def submit(self, count: int) -> None:
        """Submit the next ``count`` ids; what the SDK could not confirm goes again
        (same ids: the stream drops repeats) until it is confirmed."""
        chunk = self.ids[self.submitted : self.submitted + count]
        unconfirmed, tries = set(chunk), 0

        async def send() -> bool:
            nonlocal unconfirmed, tries
            attempt = sorted(unconfirmed)
            tries += 1
            if tries > 1:
                self.resubmitted |= set(attempt)
            signatures = [
                self.app.signature(TASK, [task_number(t)], queue=self.queue, task_id=t)
                for t in attempt
            ]
            try:
                await self.app.asend_many(signatures)
                unconfirmed = set()
            except CeleriacError as exc:
                self.submit_errors += 1
                self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"[:300]
                named = getattr(exc, "task_ids", None)
                unconfirmed = set(named) if named is not None else set(attempt)
            return not unconfirmed

        await await_until(send, timeout=60, what=f"{len(chunk)} tasks confirmed", interval=0.2)
        self.submitted += len(chunk)

    def wants_more(self) -> bool:
        sample = self.live.latest()
        return sample is not None and sample.pending < LOAD.low

    async def produce(self) -> None:
        """The first burst, then top-ups until the kills are over."""
        await self.submit(LOAD.first)
        while self.submitted < len(self.ids):
            await await_until(
                lambda: self.kills_over.is_set() or self.wants_more(),
                timeout=120,
                what="the backlog to fall, or the kills to be over",
                interval=0.1,
            )
            if self.kills_over.is_set():
                return
            await self.submit(min(LOAD.chunk, len(self.ids) - self.submitted))

    async def kill_leader(self, what: str) -> Kill:
        """SIGKILL the node leading ``what``; wait for the status to be right without it;
        start the node again; wait for the status to be updated again."""
        await asyncio.to_thread(self.cluster.wait_ready, 60.0)
        name = await await_until(
            lambda: self.live.leader(what), timeout=30, what=f"the {what} leader"
        )
        node = self.cluster.node(name)
        sample = await await_until(self.live.read, timeout=30, what="the consumer")
        assert sample.pending > 0, f"nothing pending before killing the {what} leader"
        kill = Kill(what, name, time.monotonic(), sample.pending)
        self.kills.append(kill)
        await asyncio.to_thread(node.kill)

        async def another_leads() -> bool:
            return await self.live.leader(what) != name

        await await_until(another_leads, timeout=60, what=f"a new {what} leader", interval=0.1)
        kill.elected = time.monotonic() - kill.at
        first = await self.agreeing_since(
            kill.at, f"the status backlog to agree with the consumer after {name} died"
        )
        kill.status = first[0].at - kill.at
        await restart(node)
        await asyncio.to_thread(self.cluster.wait_ready, 60.0)
        rejoined = time.monotonic()
        kill.back = rejoined - kill.at
        again = await self.agreeing_since(
            rejoined, f"the status backlog to be updated after {name} rejoined"
        )
        kill.after_rejoin = again[0].at - rejoined
        return kill

    async def agreeing_since(self, since: float, what: str) -> list[Seen]:
        """Wait for status changes after ``since`` that agree with the consumer; on a
        timeout say what the status and the consumer showed meanwhile."""
        try:
            return await await_until(
                lambda: self.status.agreeing_since(self.live, since),
                timeout=45,
                what=what,
                interval=0.1,
            )
        except AssertionError as exc:
            shown = [c for c in self.status.changes if c.at > since]
            live = [s for s in self.live.samples if s.at > since]
            raise AssertionError(
                f"{exc}\nstatus changes since: {shown}\nlive samples since: {live[::10]}"
                f"\nReady: {self.status.readiness[-4:]}"
            ) from None

    async def chaos(self) -> None:
        try:
            for what in ("stream", "consumer"):
                await self.kill_leader(what)
        finally:
            self.kills_over.set()


def task_number(task_id: str) -> int:
    return int(task_id.rsplit("-", 1)[1])


async def restart(node: NatsServer) -> None:
    """Start a killed node again on this (the event loop's) thread, so it lives as long as
    the test process, and wait in a pool thread until it is healthy and current."""
    node.launch()
    await asyncio.to_thread(node.wait_healthy, 60.0)


# Kubernetes helpers ---------------------------------------------------------------------------


def replicas(kube: KubeEnvironment, namespace: str, pool: str) -> int | None:
    dep = get(kube, namespace, "deployment", f"{pool}-workers")
    return int(dep["spec"]["replicas"]) if dep else None


def scale_messages(kube: KubeEnvironment, namespace: str, pool: str) -> list[str]:
    out = kube.kubectl(
        "get", "-n", namespace, "events", "--field-selector",
        f"involvedObject.name={pool},reason=Scaled", "-o", "json",
    ).stdout  # fmt: skip
    return [str(e["message"]) for e in json.loads(out)["items"]]


def ready(kube: KubeEnvironment, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    obj: dict[str, Any] | None = get(kube, namespace, kind, name)
    cond = condition(obj, "Ready")
    return obj if cond and cond["status"] == "True" else None


def objects(name: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "celeriac.io/v1alpha1",
            "kind": "TaskQueue",
            "metadata": {"name": name},
            "spec": {
                "replicas": REPLICAS,
                "deletionPolicy": "Delete",
                # An ack lost with a leader: the task is delivered again this soon.
                "delivery": {"ackWait": "5s"},
            },
        },
        {
            "apiVersion": "celeriac.io/v1alpha1",
            "kind": "WorkerPool",
            "metadata": {"name": name},
            "spec": {
                "queues": [name],
                "app": "opscale_tasks:app",
                "image": "celeriac-e2e:local",
                # One task at a time per worker: the backlog lasts through the kills.
                "concurrency": 1,
                "pool": "asyncio",
                "terminationGracePeriodSeconds": 10,
                "env": [{"name": "PYTHONPATH", "value": str(APPS)}],
                "autoscaling": {
                    "minReplicas": 0,
                    "maxReplicas": MAX_WORKERS,
                    "targetBacklogPerReplica": 100,
                    "scaleDownStabilization": "5s",
                    "idleBeforeZero": "10s",
                    "pollInterval": "1s",
                },
            },
        },
    ]


# Checks after the run -------------------------------------------------------------------------


async def drained(js: JetStreamContext, stream: str) -> bool:
    info = await js.stream_info(stream)
    consumer = await js.consumer_info(stream, names.CONSUMER_NAME)
    state = (info.state.messages, consumer.num_ack_pending, consumer.num_pending)
    assert state == (0, 0, 0), f"(messages, ack-pending, pending) = {state}"
    return True


def report(run: Run, figures: dict[str, Any]) -> str:
    lines = [
        f"\noperator on a {len(run.cluster.nodes)}-node cluster: {figures['tasks']} tasks "
        f"({TASK}), queue R{REPLICAS}, pool 0..{MAX_WORKERS} x 1; leader SIGKILLs:"
    ]
    for kill in run.kills:
        lines.append(
            f"  {kill.what} leader {kill.node} killed ({kill.pending} pending): another node "
            f"led after {kill.elected:.1f} s, status backlog right again {kill.status:.1f} s "
            f"after the kill; node back and cluster whole at {kill.back:.1f} s, status "
            f"updated {kill.after_rejoin:.1f} s later"
        )
    lines.append(
        f"  lost {figures['lost']}, {figures['extra_deliveries']} extra deliveries, "
        f"{figures['later_delivery']} succeeded on a later delivery, "
        f"{run.submit_errors} failed submit call(s), {len(run.resubmitted)} resubmitted; "
        f"drained {figures['drained']:.1f} s after the first submit, "
        f"scaled to zero {figures['to_zero']:.1f} s after the drain"
    )
    lines.append("  timeline (s from the first submit):")
    events = [(k.at, f"SIGKILL {k.what} leader {k.node}") for k in run.kills]
    events += [(k.at + k.back, f"{k.node} back, cluster whole") for k in run.kills]
    for seen in run.status.changes:
        nearest = (
            run.live.nearest(seen.backlog, seen.at - STATUS_LAG, seen.at)
            if seen.backlog is not None
            else None
        )
        events.append((seen.at, f"status backlog {seen.backlog} (nearest live {nearest})"))
    events += [(at, f"Ready {why}: {msg}") for at, why, msg in run.status.readiness]
    for at, what in sorted(events):
        if at >= run.started:
            lines.append(f"    {at - run.started:6.1f}  {what}")
    if run.first_error:
        lines.append(f"  first failed submit: {run.first_error}")
    return "\n".join(lines)


# The test -------------------------------------------------------------------------------------


async def check_setup(
    kube: KubeEnvironment, ns: str, name: str, js: JetStreamContext, cluster: NatsCluster
) -> None:
    """The queue Ready with 3 replicas, the buckets too, an idle pool with the seed list."""
    await asyncio.to_thread(
        wait_until,
        lambda: ready(kube, ns, "tq", name),
        timeout=60,
        what="the TaskQueue Ready",
        interval=0.25,
    )
    info = await js.stream_info(names.stream_name(name))
    assert info.config.num_replicas == REPLICAS, info.config
    assert info.cluster is not None and len(info.cluster.replicas or []) == REPLICAS - 1
    bucket = await js.stream_info(f"KV_{names.RESULTS_BUCKET}")
    assert bucket.config.num_replicas == REPLICAS, "--bucket-replicas 3 not applied"
    await asyncio.to_thread(
        wait_until,
        lambda: replicas(kube, ns, name) == 0,
        timeout=60,
        what="an idle pool at zero replicas",
        interval=0.25,
    )
    dep = await asyncio.to_thread(get, kube, ns, "deployment", f"{name}-workers")
    [container] = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CELERIAC_NATS_URL"] == cluster.urls, env


async def run_through_kills(run: Run, kube: KubeEnvironment, ns: str) -> dict[str, float]:
    """Submit, let the pool scale up, kill the two leaders, drain, scale to zero."""
    name, live, status = run.queue, run.live, run.status
    stop = asyncio.Event()
    tasks = [asyncio.create_task(live.follow(stop)), asyncio.create_task(status.follow(stop))]
    run.started = time.monotonic()
    try:
        producer = asyncio.create_task(run.produce())
        tasks.append(producer)
        await asyncio.to_thread(
            wait_until,
            lambda: replicas(kube, ns, name) == MAX_WORKERS,
            timeout=30,
            what=f"the pool to scale up from 0 to {MAX_WORKERS}",
            interval=0.25,
        )
        await await_until(
            lambda: (s := live.latest()) is not None and s.ack_pending > 0,
            timeout=60,
            what="tasks running",
            interval=0.1,
        )
        await await_until(
            lambda: [s for s in status.agreeing_since(live, run.started) if s.backlog],
            timeout=30,
            what="the status to show the backlog before any kill",
            interval=0.1,
        )
        async with asyncio.timeout(150):
            await asyncio.gather(producer, run.chaos())
        await await_until(
            lambda: drained(live.js, live.stream),
            timeout=120,
            what="every task to end",
            interval=0.2,
        )
        drained_at = time.monotonic()
        await asyncio.to_thread(
            wait_until,
            lambda: replicas(kube, ns, name) == 0,
            timeout=60,
            what="the pool back to zero after the drain",
            interval=0.25,
        )
        to_zero = time.monotonic() - drained_at
        await await_until(
            lambda: status.changes and status.changes[-1].backlog == 0,
            timeout=30,
            what="the status backlog at 0",
            interval=0.1,
        )
    finally:
        stop.set()
        for task in tasks:
            task.cancel()  # a producer left waiting after a failure
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for node in run.cluster.nodes:  # the session's cluster stays whole
            if not node.running:
                await restart(node)
    return {"drained": drained_at - run.started, "to_zero": to_zero}


async def check_outcome(
    run: Run, js: JetStreamContext, timings: dict[str, float]
) -> dict[str, Any]:
    """Every task SUCCESS with x * x, every status backlog right; print the figures."""
    submitted = run.ids[: run.submitted]
    records = await read_results(js, submitted)
    consumer = await js.consumer_info(names.stream_name(run.queue), names.CONSUMER_NAME)
    missing = [t for t in submitted if t not in records]
    wrong = {
        t: (r.state.value, r.result, r.error)
        for t, r in records.items()
        if r.state is not TaskState.SUCCESS or r.result != task_number(t) ** 2
    }
    figures: dict[str, Any] = {
        "tasks": len(submitted),
        "lost": len(missing) + len(wrong),
        "extra_deliveries": int(consumer.delivered.consumer_seq) - len(submitted),
        "later_delivery": sum(1 for r in records.values() if r.retries > 0),
        "status_after_kill": {k.what: round(k.status, 1) for k in run.kills},
        "status_after_rejoin": {k.what: round(k.after_rejoin, 1) for k in run.kills},
        **{k: round(v, 1) for k, v in timings.items()},
        "status_changes": len(run.status.changes),
    }
    print(report(run, figures))
    print(f"  figures: {figures}")
    assert not missing, f"{len(missing)} task(s) without a result, e.g. {missing[:5]}"
    assert not wrong, f"{len(wrong)} task(s) not SUCCESS with x * x: {list(wrong.items())[:5]}"
    assert figures["lost"] == 0
    assert len(run.kills) == 2
    assert all(k.status < 30 for k in run.kills), figures
    assert figures["to_zero"] < 45, figures
    # Every backlog the status showed agreed with a live reading of the consumer.
    off = run.status.disagreeing(run.live)
    assert not off, f"status backlog off the consumer's num_pending: {off[:5]}"
    for task_id in submitted[:: max(1, len(submitted) // 20)]:  # through the public API
        assert await run.app.AsyncResult(task_id).aget(timeout=10) == task_number(task_id) ** 2
    return figures


async def test_leader_kills_keep_status_and_autoscaling(
    cluster_operator: OperatorProcess,
    cluster_namespace: str,
    cluster_tasks: Any,
    nats_cluster: NatsCluster,
) -> None:
    kube, ns = cluster_operator.kube, cluster_namespace
    name = f"ha-{uuid.uuid4().hex[:8]}"
    app: Celeriac = cluster_tasks.app
    await asyncio.to_thread(nats_cluster.wait_ready)
    manifest = yaml.safe_dump_all(objects(name))
    await asyncio.to_thread(kube.kubectl, "apply", "-n", ns, "-f", "-", input=manifest)
    nc = await nats.connect(
        servers=nats_cluster.urls.split(","),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        connect_timeout=2,
    )
    try:
        js = nc.jetstream(timeout=5.0)
        await check_setup(kube, ns, name, js, nats_cluster)
        live = Live(nc.jetstream(timeout=1.0), names.stream_name(name))
        ids = [f"ha-{uuid.uuid4().hex[:8]}-{i}" for i in range(LOAD.most)]
        run = Run(app, name, nats_cluster, live, StatusLog(kube, ns, name), ids)
        timings = await run_through_kills(run, kube, ns)
        figures = await check_outcome(run, js, timings)
        assert figures["lost"] == 0 and figures["to_zero"] < 45, figures

        messages = await asyncio.to_thread(scale_messages, kube, ns, name)
        assert any(f"scale up from 0 to {MAX_WORKERS}" in m for m in messages), messages
        assert any("scale to zero" in m for m in messages), messages
        assert await asyncio.to_thread(ready, kube, ns, "tq", name)
        pool = await asyncio.to_thread(
            wait_until,
            lambda: ready(kube, ns, "workerpool", name),
            timeout=15,
            what="the WorkerPool Ready",
            interval=0.25,
        )
        assert pool["status"]["backlog"] == 0, pool["status"]
        assert cluster_operator.process is not None and cluster_operator.process.alive(), (
            cluster_operator.log()
        )
    finally:
        await nc.close()
        await app.aclose()
        await asyncio.to_thread(
            kube.kubectl, "delete", "-n", ns, "tq", name, "--timeout=60s", check=False
        )
