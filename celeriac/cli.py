"""The ``celeriac`` command: dispatches to each component's own command line.

Subcommands are imported lazily so ``celeriac worker`` never imports kopf and
``celeriac operator`` never imports the worker runtime.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from celeriac import __version__
from celeriac.extras import MissingExtraError, require

# subcommand -> (module whose main(argv) returns an exit code, the extra it needs, help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "worker": ("celeriac.worker_runtime.cli", "worker", "run a worker that consumes queues"),
    "operator": ("celeriac.operator.cli", "operator", "run the Kubernetes operator"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``celeriac`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="celeriac",
        description="Celeriac: a Kubernetes-native distributed task queue on NATS JetStream.",
    )
    parser.add_argument("--version", action="version", version=f"celeriac {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not args or args[0] not in SUBCOMMANDS:
        parser.parse_args(args)
        parser.print_help()
        return 2
    module_name, extra, _ = SUBCOMMANDS[args[0]]
    try:
        require(extra, f"celeriac {args[0]}")
    except MissingExtraError as exc:
        print(f"celeriac: {exc}", file=sys.stderr)
        return 1
    entry: Callable[[list[str]], int] = importlib.import_module(module_name).main
    return entry(args[1:])


if __name__ == "__main__":
    sys.exit(main())
