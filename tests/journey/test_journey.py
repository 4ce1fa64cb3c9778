"""The README's journey as an e2e test: chart, examples, SDK, autoscaling, every result right."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import uuid
from collections.abc import Iterator

import nats
import pytest
from celeriac_devenv.chart import Release, uninstall
from celeriac_devenv.cluster import KubeEnvironment
from celeriac_devenv.journey import Journey, JourneyOptions, JourneyReport
from nats.js.errors import NotFoundError

from celeriac.protocol import names

pytestmark = pytest.mark.e2e


async def _delete_streams(url: str, queue: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for stream in (names.stream_name(queue), names.dead_letter_stream_name(queue)):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream)
    finally:
        await nc.close()


@pytest.fixture
def journey_run(kube_env: KubeEnvironment) -> Iterator[tuple[JourneyReport, JourneyOptions, str]]:
    """The whole journey in namespaces of its own; everything removed afterwards."""
    suffix = uuid.uuid4().hex[:6]
    namespace = f"journey-{suffix}"
    options = JourneyOptions(
        tasks=1500,
        namespace=namespace,
        release=Release(name=f"journey-{suffix}", namespace=f"journey-system-{suffix}"),
        min_replicas=0,
        max_replicas=3,
        mail_latency=0.05,
        # Other tests share this cluster: the operator handles only the journey's namespace.
        watch_namespaces=(namespace,),
        timeout=180,
    )
    out = io.StringIO()
    journey = Journey(kube_env, options, out)
    try:
        with journey:
            report = journey.run()
            yield report, options, out.getvalue()
            journey.remove_examples()
    finally:
        uninstall(kube_env, options.release)
        kube_env.kubectl(
            "delete", "namespace", namespace, options.release.namespace, "--wait=false"
        )
        asyncio.run(_delete_streams(str(kube_env.nats_url), journey.queue))


def test_journey_end_to_end(journey_run: tuple[JourneyReport, JourneyOptions, str]) -> None:
    report, options, output = journey_run
    # Every task ran once and came back with the right receipt.
    assert report.wrong == []
    assert report.succeeded == report.tasks == options.tasks
    assert report.failed == 0
    # The pool scaled up on the backlog, to its maximum, and back down to its minimum.
    assert report.peak_replicas == options.max_replicas
    assert report.final_replicas == options.min_replicas
    assert any(m.startswith("scale up from 0") for m in report.scaling_events)
    assert any(m.startswith("scale to zero") for m in report.scaling_events)
    # The example TaskSchedule fired, its run woke the pool and succeeded; then suspended.
    assert report.schedule_runs >= 1
    assert report.schedule_last_run.startswith(f"{options.namespace}.nightly-digest.")
    assert "kubectl get taskschedules" in output
    # What the user saw: the commands, then periodic progress lines (not a TTY here).
    assert "helm install" in output and "kubectl apply" in output
    assert re.search(r"replicas 3/\d desired/ready", output)
    assert re.search(rf"done {options.tasks}/{options.tasks} \| backlog +0", output)
    assert "\r" not in output
    assert re.search(r"can-i delete deployments .*->\s+no", output)  # least privilege
