"""The README's demo: the whole user journey on a local cluster, with live progress.

``python -m celeriac_devenv.demo`` starts the control plane, a kwok node and NATS
in a temporary folder, installs the Helm chart, runs the operator with the chart
ServiceAccount's credentials, applies the example TaskQueue and WorkerPool with
kubectl, submits a few thousand tasks with the SDK, shows the backlog, replicas
and throughput while they run, prints a summary, and stops everything again.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from celeriac_devenv.cluster import start_environment
from celeriac_devenv.errors import DevenvError
from celeriac_devenv.journey import Journey, JourneyOptions, summary


def run(workdir: Path, options: JourneyOptions) -> bool:
    """Run the demo in ``workdir``; True when every task came back right."""
    print("== Starting etcd, kube-apiserver, controller-manager, scheduler, kwok, NATS", flush=True)
    started = time.monotonic()
    env = start_environment(workdir)
    try:
        print(f"up in {time.monotonic() - started:.1f}s: {env.server}, NATS {env.nats_url}")
        print(env.kubectl("get", "nodes").stdout.rstrip(), flush=True)
        with Journey(env, options, sys.stdout) as journey:
            report = journey.run()
        print("\n== Summary")
        for line in summary(report, options):
            print(line)
        print(f"(logs: {workdir / 'logs'})")
        return not report.wrong and report.succeeded == report.tasks
    finally:
        print("\n== Stopping everything", flush=True)
        env.stop()


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m celeriac_devenv.demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temp folder")
    parser.add_argument("--tasks", type=int, default=3000, help="tasks to submit (default 3000)")
    parser.add_argument("--max-replicas", type=int, default=4, help="pool maximum (default 4)")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.max_replicas < 1:
        parser.error("--tasks and --max-replicas must be at least 1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="celeriac-demo-"))
    options = JourneyOptions(tasks=args.tasks, max_replicas=args.max_replicas)
    try:
        ok = run(workdir, options)
    except DevenvError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    print("done" if ok else "some tasks did not come back right")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
