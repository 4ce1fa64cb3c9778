"""``python -m bench``: run the workloads, then write JSON, markdown and a PNG chart.

Every contender runs in the same invocation against servers started here (a
nats-server and a redis-server on loopback, no persistence for Redis), so the
ratios compare like with like. ``--workload`` picks workloads (repeatable);
``--quick`` shrinks every count for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import rendering, reporting, workloads
from bench.contending import Contender
from bench.servers import REPO_ROOT, SetupError, run_setup, running_nats, running_redis
from bench.work import calibrate_burn

BrokerWorkload = Callable[[Mapping[str, Contender], workloads.Sizes], list[dict[str, Any]]]
BROKER_WORKLOADS: dict[str, BrokerWorkload] = {
    "enqueue": workloads.enqueue,
    "process": workloads.process,
    "latency": workloads.latency,
    "io": workloads.io_bound,
    "cpu": workloads.cpu_bound,
}
KUBE_WORKLOADS = ("autoscale", "operator", "autoscale-replay")
# Simulations: no servers, no cluster.
SIM_WORKLOADS = ("autoscale-sim",)
ALL_WORKLOADS = (*BROKER_WORKLOADS, *KUBE_WORKLOADS, *SIM_WORKLOADS)
CONTENDERS = ("raw-nats", "celeriac", "celery-redis")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "-w", "--workload", action="append", choices=ALL_WORKLOADS, metavar="NAME",
        help=f"run only this workload (repeatable): {', '.join(ALL_WORKLOADS)}",
    )  # fmt: skip
    parser.add_argument(
        "--contenders", default=",".join(CONTENDERS),
        help=f"comma-separated subset of {', '.join(CONTENDERS)} (default: all)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "bench" / "results",
        help="folder for <date>.json/.md/.png (default: bench/results)",
    )  # fmt: skip
    parser.add_argument(
        "--no-setup", action="store_true", help="do not run bench/setup.sh for missing tools"
    )
    args = parser.parse_args(list(argv))
    chosen = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(CONTENDERS))
    if unknown or not chosen:
        parser.error(f"unknown contenders {unknown}; choose from {', '.join(CONTENDERS)}")
    args.contenders = chosen
    args.workload = list(dict.fromkeys(args.workload or ALL_WORKLOADS))
    return args


def build_contenders(names: Sequence[str], stack: ExitStack, scratch: Path) -> dict[str, Contender]:
    """Start the servers the chosen contenders need and connect to them."""
    nats = stack.enter_context(running_nats(scratch / "nats"))
    contenders: dict[str, Contender] = {}
    logs = scratch / "logs"
    if "raw-nats" in names:
        from bench.rawnats import RawNats

        contenders["raw-nats"] = RawNats(nats.url, logs)
    if "celeriac" in names:
        from bench.celeriacnats import CeleriacNats

        contenders["celeriac"] = CeleriacNats(nats.url, logs)
    if "celery-redis" in names:
        from bench.celeryredis import CeleryRedis

        redis = stack.enter_context(running_redis(scratch / "redis"))
        contenders["celery-redis"] = CeleryRedis(redis.url, logs)
    for contender in contenders.values():
        stack.callback(contender.close)
    return contenders


def nats_binary() -> str:
    """Path of the nats-server the run used (for the version line)."""
    from celeriac_devenv.building import ensure_binaries

    return str(ensure_binaries(["nats-server"])["nats-server"])


Save = Callable[[str, list[dict[str, Any]]], None]


def run_broker_workloads(args: argparse.Namespace, scratch: Path, save: Save) -> None:
    """Every selected workload that needs only NATS and Redis; each is saved when done."""
    selected = [w for w in args.workload if w in BROKER_WORKLOADS]
    if not selected:
        return
    loops = calibrate_burn() if "cpu" in selected else 0
    sizes = workloads.Sizes.quick(loops) if args.quick else workloads.Sizes.full(loops)
    with ExitStack() as stack:
        contenders = build_contenders(args.contenders, stack, scratch)
        for name in selected:
            workloads.say(f"== {name}: {rendering.TITLES[name]}")
            started = time.monotonic()
            save(name, BROKER_WORKLOADS[name](contenders, sizes))
            workloads.say(f"   ({time.monotonic() - started:.0f} s)")


def run_kube_workloads(args: argparse.Namespace, scratch: Path, save: Save) -> None:
    """The workloads on the local Kubernetes control plane."""
    selected = [w for w in args.workload if w in KUBE_WORKLOADS]
    if not selected or "celeriac" not in args.contenders:
        return
    from bench import kubeworkloads

    stem = datetime.now(UTC).strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
    runs = kubeworkloads.run(
        selected, quick=args.quick, scratch=scratch / "kube", out=args.out, stem=stem
    )
    for name, rows in runs:
        save(name, rows)


def run_sim_workloads(args: argparse.Namespace, save: Save) -> None:
    """The autoscaling simulation: rows saved like a workload's, plus its replica chart."""
    if "autoscale-sim" not in args.workload:
        return
    from bench import autoscalesim

    workloads.say(f"== autoscale-sim: {rendering.TITLES['autoscale-sim']}")
    started = time.monotonic()
    rows, curves = autoscalesim.sweep(quick=args.quick, progress=workloads.say)
    save("autoscale-sim", rows)
    stem = datetime.now(UTC).strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
    rendering.replica_curves(curves, args.out / f"{stem}-autoscale-sim.png")
    for v in autoscalesim.verdicts(rows):
        workloads.say(f"   {v['verdict']:<8} {v['target']}: {v['value']}")
    workloads.say(f"   ({time.monotonic() - started:.0f} s)")


def write_outputs(out: Path, result: dict[str, Any]) -> Path:
    """Merge into today's JSON (workloads not rerun are kept), then write .md and .png."""
    out.mkdir(parents=True, exist_ok=True)
    stem = result["date"] + ("-quick" if result["quick"] else "")
    json_path = out / f"{stem}.json"
    if json_path.exists():
        previous = json.loads(json_path.read_text())
        merged = dict(previous.get("workloads", {}))
        merged.update(result["workloads"])
        result["workloads"] = {k: merged[k] for k in ALL_WORKLOADS if k in merged}
    result["ratios"] = reporting.ratios(result["workloads"])
    result["targets"] = reporting.targets(result["workloads"])
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(rendering.markdown(result))
    rendering.chart(result["workloads"], out / f"{stem}.png")
    return json_path


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    servers = any(w not in SIM_WORKLOADS for w in args.workload)
    if servers and not args.no_setup:
        try:
            run_setup()
        except SetupError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
    scratch = Path(tempfile.mkdtemp(prefix="celeriac-bench-"))
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    base = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command.strip(),
        "quick": args.quick,
        "machine": reporting.machine_info(nats_binary() if servers else None),
    }
    latest: dict[str, Any] = {}

    def save(name: str, rows: list[dict[str, Any]]) -> None:
        latest.clear()
        latest.update(base, workloads={name: rows})
        write_outputs(args.out, latest)

    try:
        run_broker_workloads(args, scratch, save)
        run_kube_workloads(args, scratch, save)
        run_sim_workloads(args, save)
    except BaseException:
        print(f"bench: failed; logs kept in {scratch}", file=sys.stderr)
        raise
    shutil.rmtree(scratch, ignore_errors=True)
    stem = base["date"] + ("-quick" if args.quick else "")
    workloads.say(f"bench: wrote {args.out / stem}.json (+ .md, .png)")
    for target in latest.get("targets", []):
        workloads.say(f"   {target['verdict']:<12} {target['target']}: {target['value']}")
    return 0
