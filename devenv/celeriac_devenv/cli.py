"""``celeriac-devenv``: build, start and stop the local environment by hand.

``celeriac-devenv up`` leaves the servers running in the background and prints
the exports; ``eval "$(celeriac-devenv up)"`` points the shell at them.
``celeriac-devenv down`` stops them. ``up --nats-cluster 3`` runs NATS as a
three-node JetStream cluster instead of a single server; ``up --nats-secure`` runs
a single server that requires TLS and a user/password, as production NATS does.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path

from celeriac.natsauth import AUTH_DIR_ENV
from celeriac_devenv.building import cache_root, ensure_binaries, ensure_programs
from celeriac_devenv.cluster import start_environment, stop_saved
from celeriac_devenv.errors import DevenvError
from celeriac_devenv.nats import create_nats_security, start_nats, start_nats_cluster


def default_workdir() -> Path:
    """Where a hand-started environment lives: ``$CELERIAC_DEVENV_DIR`` or the cache."""
    explicit = os.environ.get("CELERIAC_DEVENV_DIR")
    return Path(explicit) if explicit else cache_root() / "env"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``celeriac-devenv``."""
    parser = argparse.ArgumentParser(prog="celeriac-devenv", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("build", help="build and cache every binary and Go program (no-op when cached)")
    up = sub.add_parser("up", help="start etcd, the control plane, kwok, NATS and the pod runner")
    up.add_argument("--nodes", type=int, default=1, help="simulated nodes (default 1)")
    up.add_argument(
        "--nats-cluster",
        type=_cluster_size,
        default=0,
        metavar="N",
        help="run NATS as an N-node JetStream cluster (3 survives losing a node); "
        "CELERIAC_NATS_URL becomes the comma-separated list of its nodes",
    )
    up.add_argument(
        "--nats-secure",
        action="store_true",
        help="run a single NATS that requires TLS and a user/password; CELERIAC_NATS_URL "
        f"becomes tls://..., {AUTH_DIR_ENV} the folder with user, password and ca.crt",
    )
    up.add_argument("--workdir", type=Path, default=None)
    down = sub.add_parser("down", help="stop what 'up' started")
    down.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _run(args)
    except DevenvError as exc:
        print(f"celeriac-devenv: {exc}", file=sys.stderr)
        return 1


def _cluster_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of nodes: {text!r}") from None
    if size != 0 and size < 2:
        raise argparse.ArgumentTypeError("a NATS cluster needs at least 2 nodes (3 survive a loss)")
    return size


def _run(args: argparse.Namespace) -> int:
    if args.action == "build":
        for name, path in {**ensure_binaries(), **ensure_programs()}.items():
            print(f"{name}: {path}")
        return 0
    workdir = args.workdir or default_workdir()
    if args.action == "down":
        stopped = stop_saved(workdir)
        print("stopped" if stopped else f"nothing running in {workdir}", file=sys.stderr)
        return 0
    cluster_size: int = args.nats_cluster
    secure: bool = args.nats_secure
    if secure and cluster_size:
        raise DevenvError(
            "--nats-secure runs a single NATS server; it cannot be combined with --nats-cluster"
        )
    stop_saved(workdir)
    # Turn SIGTERM into SystemExit so a half-started environment is stopped again.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = start_environment(
        workdir, nodes=args.nodes, with_nats=not (cluster_size or secure), tie_to_parent=False
    )
    exports = env.exports()
    hints: list[str] = []
    if secure:
        try:
            security = create_nats_security(workdir / "nats-security")
            server = start_nats(workdir / "nats", tie_to_parent=False, security=security)
        except BaseException:
            env.stop()
            raise
        # The server stops with the environment (``down`` stops every saved process).
        if server.process:
            env.processes.append(server.process)
        exports["CELERIAC_NATS_URL"] = server.url
        exports[AUTH_DIR_ENV] = str(security.client_dir)
        hints = [
            f"# NATS requires TLS and a user/password: {server.url}",
            f"# {AUTH_DIR_ENV}={security.client_dir} (files user, password, ca.crt)",
        ]
    if cluster_size:
        try:
            nats = start_nats_cluster(workdir / "nats", size=cluster_size, tie_to_parent=False)
        except BaseException:
            env.stop()
            raise
        # The nodes stop with the environment (``down`` stops every saved process).
        env.processes.extend(node.process for node in nats.nodes if node.process)
        exports["CELERIAC_NATS_URL"] = nats.urls
    env.save_state()
    print(f"# Celeriac local environment is up: API server {env.server}", file=sys.stderr)
    print("# kubectl get nodes; stop it with: celeriac-devenv down", file=sys.stderr)
    for hint in hints:
        print(hint, file=sys.stderr)
    for key, value in exports.items():
        quoted = value if key == "PATH" else shlex.quote(value)
        print(f'export {key}="{quoted}"' if key == "PATH" else f"export {key}={quoted}")
    return 0
