"""The README's demo: the whole user journey on a local cluster, with live progress.

``python -m celeriac_devenv.demo`` starts the control plane, a kwok node and NATS
in a temporary folder, installs the Helm chart, runs the operator with the chart
ServiceAccount's credentials, applies the example TaskQueue and WorkerPool with
kubectl, submits a few thousand tasks with the SDK, shows the backlog, replicas
and throughput while they run, and prints a summary. Then it starts ``celeriac
dashboard`` against the same NATS and cluster, prints its URL and keeps everything
up until Ctrl-C; ``--no-dashboard`` (or a stdin that is not a terminal) stops
everything right after the summary.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from celeriac_devenv.cluster import KubeEnvironment, start_environment
from celeriac_devenv.dashboard import start_dashboard
from celeriac_devenv.errors import DevenvError
from celeriac_devenv.journey import Journey, JourneyOptions, summary


def run(workdir: Path, options: JourneyOptions, *, dashboard: bool = False) -> bool:
    """Run the demo in ``workdir``; True when every task came back right.

    With ``dashboard``, keep everything up with a dashboard until Ctrl-C afterwards.
    """
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
            if dashboard:
                # Inside the journey: the operator keeps scaling the pool meanwhile.
                serve_dashboard(env, workdir)
        return not report.wrong and report.succeeded == report.tasks
    finally:
        print("\n== Stopping everything", flush=True)
        env.stop()


def serve_dashboard(env: KubeEnvironment, workdir: Path) -> None:
    """Run ``celeriac dashboard`` on the demo's NATS and cluster until Ctrl-C."""
    assert env.nats_url is not None  # the journey ran on it
    print("\n== celeriac dashboard", flush=True)
    try:
        dash = start_dashboard(env.nats_url, log_dir=workdir / "logs", kubeconfig=env.kubeconfig)
    except DevenvError as exc:
        # The journey's result stands; only the look around is lost.
        print(f"the dashboard did not start: {exc}", file=sys.stderr)
        return
    try:
        print(f"celeriac dashboard on {dash.url}")
        print("Everything keeps running: the operator scales the pool when tasks come in.")
        print("Submit more from another shell with these settings:")
        print(f"   export CELERIAC_NATS_URL={env.nats_url} KUBECONFIG={env.kubeconfig}")
        print("Press Ctrl-C to stop everything.", flush=True)
        try:
            while dash.process.alive():
                time.sleep(0.5)
            print(f"\nthe dashboard exited:\n{dash.process.log_tail()}", file=sys.stderr)
        except KeyboardInterrupt:
            print()
    finally:
        dash.stop()


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m celeriac_devenv.demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temp folder")
    parser.add_argument("--tasks", type=int, default=3000, help="tasks to submit (default 3000)")
    parser.add_argument("--max-replicas", type=int, default=4, help="pool maximum (default 4)")
    parser.add_argument(
        "--no-dashboard",
        action="store_true",
        help="stop right after the summary instead of keeping everything up with a "
        "dashboard until Ctrl-C",
    )
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.max_replicas < 1:
        parser.error("--tasks and --max-replicas must be at least 1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="celeriac-demo-"))
    options = JourneyOptions(tasks=args.tasks, max_replicas=args.max_replicas)
    # Waiting for Ctrl-C needs someone at a terminal; scripts and CI finish as before.
    dashboard = not args.no_dashboard and sys.stdin.isatty()
    if not args.no_dashboard and not dashboard:
        print("(stdin is not a terminal: no dashboard at the end, as with --no-dashboard)")
    try:
        ok = run(workdir, options, dashboard=dashboard)
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
