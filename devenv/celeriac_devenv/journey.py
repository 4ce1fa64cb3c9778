"""The user journey, end to end: Helm chart, examples applied with kubectl, tasks from the SDK.

On a running local environment: ``helm install`` the chart, run its operator with
the chart ServiceAccount's credentials, ``kubectl apply`` the TaskQueue and
WorkerPool from ``examples/``, apply the example TaskSchedule firing every few
seconds until its first run woke the pool and succeeded, then suspend it; submit
thousands of the example shop's tasks with the SDK, show the backlog and the pool
scaling up and back down while they run, and check every result. The README's demo
and the e2e test both run this.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import yaml

from celeriac.app import Celeriac
from celeriac.protocol import names
from celeriac_devenv.chart import (
    REPO_ROOT,
    LocalOperator,
    Release,
    install,
    service_account_kubeconfig,
    start_operator,
)
from celeriac_devenv.cluster import KubeEnvironment
from celeriac_devenv.errors import DevenvError
from celeriac_devenv.processes import wait_until
from celeriac_devenv.progress import ProgressDisplay, Snapshot

EXAMPLES = REPO_ROOT / "examples"
# The example TaskSchedule runs daily; the demo makes it fire every 5 seconds.
DEMO_CRON = "*/5 * * * * *"
TASK = "shop.tasks.send_receipt"
Order = tuple[int, str, list[dict[str, int]]]


@dataclass(frozen=True)
class JourneyOptions:
    """What the journey does, and where."""

    tasks: int = 3000
    namespace: str = "shop"
    release: Release = field(default_factory=lambda: Release("celeriac", "celeriac-system"))
    min_replicas: int = 0
    max_replicas: int = 4
    # Seconds each example task waits, standing in for a mail server.
    mail_latency: float = 0.1
    # Empty: the operator watches every namespace, as the chart's default install does.
    watch_namespaces: tuple[str, ...] = ()
    timeout: float = 240.0


@dataclass
class JourneyReport:
    """What happened, for the summary and the e2e test's assertions."""

    tasks: int
    succeeded: int = 0
    failed: int = 0
    wrong: list[str] = field(default_factory=list)
    peak_replicas: int = 0
    final_replicas: int = -1
    drain_seconds: float = 0.0
    scale_down_seconds: float = 0.0
    peak_rate: float = 0.0
    scaling_events: list[str] = field(default_factory=list)
    schedule_runs: int = 0  # runs of the example TaskSchedule before it was suspended
    schedule_last_run: str = ""  # the id of its last run


def make_orders(count: int, seed: int = 2024) -> list[Order]:
    """Reproducible example orders: (order id, email, lines of price and quantity)."""
    rng = random.Random(seed)
    return [
        (
            i,
            f"customer{i}@example.com",
            [
                {"price_cents": rng.randint(100, 9999), "quantity": rng.randint(1, 5)}
                for _ in range(rng.randint(1, 3))
            ],
        )
        for i in range(count)
    ]


def expected_receipt(order: Order) -> dict[str, Any]:
    """The result the example task must return for ``order`` (computed independently)."""
    order_id, email, items = order
    total = sum(line["price_cents"] * line["quantity"] for line in items)
    return {"order_id": order_id, "to": email, "total_cents": total, "status": "sent"}


def local_pool(
    manifest: dict[str, Any], options: JourneyOptions
) -> tuple[dict[str, Any], dict[str, Any]]:
    """examples/workerpool.yaml adjusted for the local environment, and the adjustments.

    The pod runner runs workers from this checkout (so the task module comes from
    examples/apps, not an image), and the demo shortens the scale-down timers.
    """
    pool = copy.deepcopy(manifest)
    spec = pool["spec"]
    env = [e for e in spec.get("env", []) if e["name"] not in ("PYTHONPATH", "SHOP_MAIL_LATENCY")]
    changes: dict[str, Any] = {
        "env": [
            *env,
            {"name": "PYTHONPATH", "value": str(EXAMPLES / "apps")},
            {"name": "SHOP_MAIL_LATENCY", "value": str(options.mail_latency)},
        ],
        "terminationGracePeriodSeconds": 10,
        "autoscaling": {
            **spec.get("autoscaling", {}),
            "minReplicas": options.min_replicas,
            "maxReplicas": options.max_replicas,
            "scaleDownStabilization": "5s",
            "idleBeforeZero": "10s",
            "pollInterval": "1s",
        },
    }
    spec.update(copy.deepcopy(changes))
    return pool, changes


class Journey:
    """Runs the steps against ``env``, telling the user what it does on ``out``."""

    def __init__(self, env: KubeEnvironment, options: JourneyOptions, out: TextIO) -> None:
        if env.nats_url is None:
            raise DevenvError("the journey needs an environment with NATS")
        self.env = env
        self.options = options
        self.out = out
        self.nats_url = env.nats_url
        self.operator: LocalOperator | None = None
        self.queue = "emails"
        self.pool = "emails"
        self.schedule = "nightly-digest"

    def say(self, text: str) -> None:
        """One line for the user."""
        self.out.write(text + "\n")
        self.out.flush()

    def step(self, title: str) -> None:
        """A section heading."""
        self.say(f"\n== {title}")

    def __enter__(self) -> Journey:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_operator()

    def run(self) -> JourneyReport:
        """Every step, in order (use the Journey as a context manager to stop the operator)."""
        self.install_chart()
        self.start_operator()
        self.apply_examples()
        runs, last = self.schedule_digest()
        report = asyncio.run(self.submit_and_watch())
        report.schedule_runs, report.schedule_last_run = runs, last
        return report

    def stop_operator(self) -> None:
        """Stop the local operator, if it runs."""
        if self.operator is not None:
            self.operator.stop()
            self.operator = None

    def remove_examples(self) -> None:
        """Delete the WorkerPool and TaskQueue while the operator still handles finalizers."""
        kinds = (
            ("taskschedule", self.schedule),
            ("workerpool", self.pool),
            ("taskqueue", self.queue),
        )
        for kind, name in kinds:
            self.env.kubectl(
                "delete", kind, name, "-n", self.options.namespace, "--ignore-not-found",
                "--timeout=60s",
            )  # fmt: skip

    # Steps ---------------------------------------------------------------------------------

    def install_chart(self) -> None:
        """``helm install`` the chart pointed at the environment's NATS."""
        rel = self.options.release
        values: dict[str, Any] = {"nats": {"url": self.nats_url}}
        if self.options.watch_namespaces:
            values["operator"] = {"watchNamespaces": list(self.options.watch_namespaces)}
        # The user's namespace first: a namespaced install puts a Role into it.
        self.env.kubectl("create", "namespace", self.options.namespace, check=False)
        self.step(f"helm install {rel.name} helm/celeriac -n {rel.namespace} --create-namespace")
        self.say(f"   --set nats.url={self.nats_url}")
        output = install(self.env, rel, values).split("NOTES:")[0]
        self.say(
            "\n".join(line for line in output.splitlines() if line.startswith(("NAME", "STATUS")))
        )

    def start_operator(self) -> None:
        """Run the operator locally with a token of the chart's ServiceAccount."""
        rel = self.options.release
        account = f"system:serviceaccount:{rel.namespace}:{rel.service_account}"
        self.step("The operator, running as the chart's ServiceAccount")
        config = service_account_kubeconfig(
            self.env, rel, self.env.workdir / f"{rel.service_account}.kubeconfig"
        )
        self.operator = start_operator(
            self.env, rel, config, nats_url=self.nats_url,
            watch_namespaces=self.options.watch_namespaces,
        )  # fmt: skip
        self.say(f"celeriac operator is leading (Lease {rel.namespace}/{rel.lease})")
        ns = self.options.namespace
        for question in ("patch deployments --subresource=scale", "delete deployments",
                         "get secrets"):  # fmt: skip
            answer = self.env.kubectl(
                "auth", "can-i", *question.split(), "-n", ns, "--as", account, check=False
            ).stdout.strip()
            self.say(f"$ kubectl auth can-i {question} -n {ns} --as {account}  ->  {answer}")

    def apply_examples(self) -> None:
        """``kubectl apply`` the example TaskQueue and WorkerPool; wait for the queue."""
        ns = self.options.namespace
        self.step(f"kubectl apply the examples in namespace {ns}")
        queue = yaml.safe_load((EXAMPLES / "taskqueue.yaml").read_text())
        self.queue = queue["spec"].get("queue") or queue["metadata"]["name"]
        self.say(f"$ kubectl apply -n {ns} -f examples/taskqueue.yaml")
        self.say(self.env.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "taskqueue.yaml")).stdout)
        manifest = yaml.safe_load((EXAMPLES / "workerpool.yaml").read_text())
        pool, changes = local_pool(manifest, self.options)
        self.pool = pool["metadata"]["name"]
        self.say(f"$ kubectl apply -n {ns} -f examples/workerpool.yaml   # with local changes:")
        self.say(f"   {json.dumps(changes['autoscaling'])}, PYTHONPATH=examples/apps")
        self.say(self.env.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pool)).stdout)
        wait_until(self._queue_ready, timeout=60, what=f"TaskQueue {self.queue} to be Ready")
        self.say(f"$ kubectl get taskqueues,workerpools -n {ns}")
        self.say(self.env.kubectl("get", "taskqueues,workerpools", "-n", ns).stdout.rstrip())

    def schedule_digest(self) -> tuple[int, str]:
        """Apply the example TaskSchedule, firing every 5 s here; once a run has woken
        the pool and succeeded, suspend it. Its run count and last run id."""
        ns = self.options.namespace
        self.step("A recurring task: kubectl apply the example TaskSchedule")
        manifest = yaml.safe_load((EXAMPLES / "taskschedule.yaml").read_text())
        manifest["spec"]["cron"] = DEMO_CRON
        self.schedule = manifest["metadata"]["name"]
        self.say(f"$ kubectl apply -n {ns} -f examples/taskschedule.yaml   # with local changes:")
        self.say(f'   cron: "{DEMO_CRON}" (every 5 s) instead of daily at 02:30')
        self.say(self.env.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest)).stdout)
        status = wait_until(
            self._schedule_succeeded, timeout=120, what=f"a run of {self.schedule} to succeed"
        )
        self.say(f"$ kubectl get taskschedules -n {ns}")
        self.say(self.env.kubectl("get", "taskschedules", "-n", ns).stdout.rstrip())
        suspend = json.dumps({"spec": {"suspend": True}})
        self.say(
            f"$ kubectl patch taskschedule {self.schedule} -n {ns} --type merge -p '{suspend}'"
        )
        self.env.kubectl(
            "patch", "taskschedule", self.schedule, "-n", ns, "--type", "merge", "-p", suspend
        )
        wait_until(
            lambda: self._schedule_status().get("nextScheduleTime") is None,
            timeout=60,
            what=f"{self.schedule} suspended",
        )
        self.say(self.env.kubectl("get", "taskschedules", "-n", ns).stdout.rstrip())
        return int(status.get("runs") or 0), str(status["lastRun"]["id"])

    def _schedule_status(self) -> dict[str, Any]:
        proc = self.env.kubectl(
            "get", "taskschedule", self.schedule, "-n", self.options.namespace, "-o", "json",
            check=False,
        )  # fmt: skip
        return dict(json.loads(proc.stdout).get("status") or {}) if proc.returncode == 0 else {}

    def _schedule_succeeded(self) -> dict[str, Any] | None:
        status = self._schedule_status()
        return status if (status.get("lastRun") or {}).get("state") == "SUCCESS" else None

    def _queue_ready(self) -> bool:
        proc = self.env.kubectl(
            "get", "taskqueue", self.queue, "-n", self.options.namespace, "-o", "json", check=False
        )
        if proc.returncode != 0:
            return False
        conditions = (json.loads(proc.stdout).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    async def submit_and_watch(self) -> JourneyReport:
        """Submit the orders, show progress until the pool is back at its minimum, verify."""
        app = Celeriac("shop-demo", nats_url=self.nats_url, declare_queues=False)
        try:
            broker = await app.broker()
            orders = make_orders(self.options.tasks)
            baseline = await self._stream_messages(broker.js)
            self.step(f"Submitting {len(orders)} orders with the SDK")
            self.say(f'   app.send_task("{TASK}", args=[order_id, email, items]) x {len(orders)}')
            started = time.monotonic()
            ids = await self._submit(app, orders)
            self.say(f"submitted {len(ids)} tasks in {time.monotonic() - started:.1f}s")
            self.step("Running: backlog, replicas and throughput (Ctrl-C stops the demo)")
            report = JourneyReport(tasks=len(orders))
            await self._watch(broker.js, baseline, report)
            await self._verify(broker, ids, orders, report)
            report.scaling_events = self._scaling_events()
            return report
        finally:
            await app.aclose()

    async def _submit(self, app: Celeriac, orders: Sequence[Order]) -> list[str]:
        signatures = [app.signature(TASK, args=list(o), queue=self.queue) for o in orders]
        results = await app.asend_many(signatures)
        return [r.id for r in results]

    async def _stream_messages(self, js: Any) -> int:
        info = await js.stream_info(names.stream_name(self.queue))
        return int(info.state.messages)

    def _deployment(self) -> tuple[int, int, int]:
        """(spec.replicas, status.replicas, status.readyReplicas) of the pool's Deployment."""
        proc = self.env.kubectl(
            "get", "deployment", f"{self.pool}-workers", "-n", self.options.namespace,
            "-o", "json", check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            return 0, 0, 0
        dep = json.loads(proc.stdout)
        status = dep.get("status") or {}
        return (
            int(dep["spec"].get("replicas") or 0),
            int(status.get("replicas") or 0),
            int(status.get("readyReplicas") or 0),
        )

    async def _watch(self, js: Any, baseline: int, report: JourneyReport) -> None:
        display = ProgressDisplay(self.out)
        started = time.monotonic()
        total, drained_at = report.tasks, None
        try:
            while True:
                elapsed = time.monotonic() - started
                if elapsed > self.options.timeout:
                    raise DevenvError(f"the journey did not finish in {self.options.timeout:.0f}s")
                consumer = await js.consumer_info(
                    names.stream_name(self.queue), names.CONSUMER_NAME
                )
                left = max(await self._stream_messages(js) - baseline, 0)
                desired, pods, ready = await asyncio.to_thread(self._deployment)
                snap = Snapshot(
                    at=elapsed, backlog=int(consumer.num_pending),
                    in_flight=int(consumer.num_ack_pending), done=total - left, total=total,
                    desired=desired, ready=ready,
                )  # fmt: skip
                display.update(snap)
                report.peak_replicas = max(report.peak_replicas, desired)
                if drained_at is None and left == 0:
                    drained_at = elapsed
                    report.drain_seconds = elapsed
                back_down = desired == pods == self.options.min_replicas
                if drained_at is not None and back_down and report.peak_replicas > desired:
                    report.scale_down_seconds = elapsed - drained_at
                    report.final_replicas = desired
                    break
                await asyncio.sleep(0.5)
        finally:
            display.finish()
        report.peak_rate = display.peak_rate

    async def _verify(
        self, broker: Any, ids: Sequence[str], orders: Sequence[Order], report: JourneyReport
    ) -> None:
        async def check(task_id: str, order: Order) -> None:
            record = await broker.results.get(task_id)
            if record is None or record.state.value != "SUCCESS":
                report.failed += 1
                state = record.state.value if record else "PENDING"
                report.wrong.append(f"{task_id}: {state} {record.error if record else ''}")
            elif record.result != expected_receipt(order):
                report.wrong.append(f"{task_id}: wrong result {record.result!r}")
            else:
                report.succeeded += 1

        pairs = list(zip(ids, orders, strict=True))
        for i in range(0, len(pairs), 200):
            await asyncio.gather(*(check(t, o) for t, o in pairs[i : i + 200]))

    def _scaling_events(self) -> list[str]:
        proc = self.env.kubectl(
            "get", "events", "-n", self.options.namespace, "-o", "json",
            "--field-selector", f"involvedObject.name={self.pool},reason=Scaled", check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            return []
        items = json.loads(proc.stdout).get("items", [])
        items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return [str(e.get("message", "")) for e in items]


def summary(report: JourneyReport, options: JourneyOptions) -> list[str]:
    """The short summary printed after the run."""
    correct = "all results correct" if not report.wrong else f"{len(report.wrong)} wrong"
    average = report.tasks / report.drain_seconds if report.drain_seconds else 0.0
    lines = [
        f"tasks done       {report.succeeded}/{report.tasks} ({report.failed} failed, {correct})",
        f"time to drain    {report.drain_seconds:.1f}s "
        f"({average:.0f} tasks/s on average, {report.peak_rate:.0f} at peak)",
        f"replicas         {options.min_replicas} -> {report.peak_replicas} (peak, max "
        f"{options.max_replicas}) -> {report.final_replicas}",
        f"scaled back down {report.scale_down_seconds:.1f}s after the queue drained",
    ]
    if report.schedule_runs:
        lines.append(
            f"schedule         {report.schedule_runs} run(s) of the TaskSchedule, "
            f"last {report.schedule_last_run}, then suspended"
        )
    if report.scaling_events:
        lines.append("scaling decisions (kubectl get events --field-selector reason=Scaled):")
        lines += [f"  - {message}" for message in report.scaling_events]
    return lines
