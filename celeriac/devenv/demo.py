"""The README's demo: bring up the local environment and show it working.

``python -m celeriac.devenv.demo`` starts the control plane, kwok and NATS in a
temporary folder, shows the simulated node, runs a small Deployment whose pods
the pod runner turns into local processes, round-trips a JetStream message, and
stops everything again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from celeriac.devenv.cluster import KubeEnvironment, start_environment
from celeriac.devenv.errors import DevenvError
from celeriac.devenv.processes import wait_until

_HELLO = textwrap.dedent(
    """
    import os, signal, sys, time
    print("hello from", os.environ["POD_NAME"], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)
    """
)


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _show(env: KubeEnvironment, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}")
    print(env.kubectl(*args).stdout.rstrip(), flush=True)


def _hello_deployment(replicas: int) -> str:
    labels = {"celeriac.io/pool": "hello"}
    env = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    container = {"name": "hello", "image": "example.invalid/hello:1", "env": env}
    container["command"] = ["python", "-c", _HELLO]
    spec = {
        "replicas": replicas,
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": {"terminationGracePeriodSeconds": 5, "containers": [container]},
        },
    }
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hello"}}
    return json.dumps({**manifest, "spec": spec})


def _local_greetings(env: KubeEnvironment) -> int:
    logs = env.workdir / "logs" / "pods"
    return sum(1 for p in logs.glob("*.log") if "hello from" in p.read_text())


async def _jetstream_roundtrip(url: str) -> str:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="DEMO", subjects=["demo.>"])
        await js.publish("demo.greeting", b"hello, JetStream")
        sub = await js.pull_subscribe("demo.>", durable="demo")
        [msg] = await sub.fetch(1, timeout=5)
        await msg.ack()
        return msg.data.decode()
    finally:
        await nc.close()


def run(workdir: Path) -> None:
    """Run the demo in ``workdir``."""
    _step("Starting etcd, kube-apiserver, controller-manager, scheduler, kwok, NATS")
    started = time.monotonic()
    env = start_environment(workdir)
    try:
        print(f"up in {time.monotonic() - started:.1f}s: {env.server}, NATS {env.nats_url}")
        _show(env, "version")
        _show(env, "get", "nodes", "-o", "wide")
        _step("A Deployment of 3 pods; the pod runner runs each as a local process")
        env.kubectl("apply", "-f", "-", input=_hello_deployment(3))
        wait_until(lambda: _local_greetings(env) >= 3, timeout=90, what="3 local pods")
        _show(env, "get", "pods", "-o", "wide")
        _step("JetStream round trip")
        assert env.nats_url is not None
        print(asyncio.run(_jetstream_roundtrip(env.nats_url)))
    finally:
        _step("Stopping everything")
        env.stop()
    print("done")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m celeriac.devenv.demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="celeriac-demo-"))
    try:
        run(workdir)
    except DevenvError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
