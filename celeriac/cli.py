"""The ``celeriac`` command: dispatches to each component's own command line.

Subcommands are imported lazily so ``celeriac worker`` never imports kopf and
``celeriac operator`` never imports the worker runtime. As in Celery, the app may
come before the command: ``celeriac -A proj worker -P threads -c 8``. ``celeriac schedule``
(periodic tasks) needs only the SDK and lives here.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celeriac import __version__
from celeriac.extras import MissingExtraError, require

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.broker import Broker
    from celeriac.schedulestore import ScheduleInfo


class CommandError(Exception):
    """A mistake on the command line, reported as one sentence."""


# subcommand -> (module whose main(argv) returns an exit code, the extra it needs, help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "worker": ("celeriac.worker_runtime.cli", "worker", "run a worker that consumes queues"),
    "operator": ("celeriac.operator.cli", "operator", "run the Kubernetes operator"),
    "dashboard": ("celeriac.dashboard", "dashboard", "serve a live web dashboard"),
    "gateway": ("celeriac.gateway", "gateway", "serve the HTTP gateway: tasks and webhooks"),
    "webhooks": ("celeriac.worker_runtime.webhookcli", "worker", "deliver completion webhooks"),
}
SCHEDULE_HELP = "manage periodic tasks: sync, list, trigger, suspend, resume, delete"
# Admin commands (celeriac.admin, the 'cli' extra): command -> help.
ADMIN_COMMANDS: dict[str, str] = {
    "status": "queues (waiting, in flight, rate, dead letters) and live workers",
    "inspect": "look at live workers, the tasks they run and have registered",
    "result": "a task's state, result or traceback",
    "revoke": "revoke a task",
    "purge": "drop the tasks waiting in a queue",
    "events": "follow task events live (workers run with --events)",
    "dlq": "list, show, replay and purge dead letters",
}


# Celery's options before the command that Celeriac does not have: flag -> what to do.
_CELERY_GLOBAL_ONLY = {
    "-b": "the NATS URL comes from the app (nats_url=...) or $CELERIAC_NATS_URL",
    "--broker": "the NATS URL comes from the app (nats_url=...) or $CELERIAC_NATS_URL",
    "--result-backend": "results are stored on the NATS server: drop the option",
    "--loader": "drop the option: -A names the module that defines the app",
    "--config": "configure the app in the module -A names",
    "--workdir": "change to that folder before running celeriac",
    "-C": "drop the option",
    "--no-color": "drop the option",
    "-q": "drop the option",
    "--quiet": "drop the option",
    "--skip-checks": "drop the option",
}
# Celery's commands that Celeriac has no twin of, and what to use instead.
_CELERY_COMMANDS = {
    "beat": "schedules are held by the NATS server; declare TaskSchedule resources or "
    "@app.periodic_task and run `celeriac schedule sync -A MODULE`",
    "flower": "run `celeriac dashboard`",
    "control": "use `celeriac revoke`, `celeriac purge` or `celeriac inspect`",
    "multi": "run one `celeriac worker` per process, or a WorkerPool on Kubernetes",
}
# Commands that take the app given before them (celeriac -A proj worker ...).
_TAKES_APP = ("worker", "schedule")


def split_app(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """Celery's ``celeriac -A proj COMMAND ...``: the app given before the command,
    and the rest; a Celery option there that Celeriac lacks raises ``CommandError``."""
    rest = list(args)
    app: str | None = None
    while rest and rest[0].startswith("-") and rest[0] not in ("-h", "--help", "--version"):
        arg = rest.pop(0)
        if arg in ("-A", "--app"):
            if not rest or rest[0].startswith("-"):
                raise CommandError(f"{arg} needs a value: MODULE[:APP]")
            value = rest.pop(0)
        elif arg.startswith("--app="):
            value = arg.removeprefix("--app=")
        elif arg.startswith("-A"):
            value = arg[2:]
        else:
            flag = arg.split("=", 1)[0]
            advice = _CELERY_GLOBAL_ONLY.get(flag)
            if advice is None:
                raise CommandError(f"unknown option {flag} before the command")
            raise CommandError(f"{flag} is a Celery option Celeriac does not have: {advice}")
        if app is not None:
            raise CommandError("give -A/--app once")
        app = value
    return app, rest


def _with_app(app: str, args: list[str]) -> list[str]:
    """``args`` (a command and its own arguments) with the app given before it."""
    command = args[0] if args else None
    if command not in _TAKES_APP:
        if command is None:
            raise CommandError(f"-A {app}: name a command after it, e.g. celeriac -A {app} worker")
        if command in _CELERY_COMMANDS:
            raise CommandError(f"celeriac has no `{command}` command: {_CELERY_COMMANDS[command]}")
        raise CommandError(
            f"-A/--app before the command applies to {' and '.join(_TAKES_APP)}, not to "
            f"`celeriac {command}`, which finds NATS through --nats-url or $CELERIAC_NATS_URL"
        )
    own = args[1:]
    if any(a in ("-A", "--app") or a.startswith("--app=") for a in own):
        raise CommandError("give -A/--app once: before the command or after it")
    if command == "worker":
        return [command, "-A", app, *own]
    return [command, *own, "-A", app]  # schedule ACTION ... -A app


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``celeriac`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app, args = split_app(args)
        if app is not None:
            args = _with_app(app, args)
    except CommandError as exc:
        print(f"celeriac: error: {exc}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(
        prog="celeriac",
        description="Celeriac: a Kubernetes-native distributed task queue on NATS JetStream.",
    )
    parser.add_argument("--version", action="version", version=f"celeriac {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    sub.add_parser("schedule", help=SCHEDULE_HELP, add_help=False)
    for name, help_text in ADMIN_COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if args and args[0] == "schedule":
        return schedule_main(args[1:])
    if args and args[0] in ADMIN_COMMANDS:
        return _component(args[0], "cli", "celeriac.admin", args)
    if not args or args[0] not in SUBCOMMANDS:
        parser.parse_args(args)
        parser.print_help()
        return 2
    module_name, extra, _ = SUBCOMMANDS[args[0]]
    return _component(args[0], extra, module_name, args[1:])


def _component(command: str, extra: str, module_name: str, argv: list[str]) -> int:
    """Run ``module_name``'s ``main(argv)`` if ``extra`` is installed."""
    try:
        require(extra, f"celeriac {command}")
    except MissingExtraError as exc:
        print(f"celeriac: {exc}", file=sys.stderr)
        return 1
    entry: Callable[[list[str]], int] = importlib.import_module(module_name).main
    return entry(argv)


# celeriac schedule -----------------------------------------------------------------------------


def schedule_parser() -> argparse.ArgumentParser:
    """The argument parser of ``celeriac schedule``."""
    parser = argparse.ArgumentParser(
        prog="celeriac schedule",
        description="Manage periodic tasks: the schedules nats-server holds and fires.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--nats-url", metavar="URL",
        help="NATS server(s) (default: the app's, else $CELERIAC_NATS_URL, else local)",
    )  # fmt: skip
    app_option: dict[str, Any] = {
        "dest": "app_spec",
        "metavar": "MODULE[:APP]",
        "help": "module defining the app (its NATS settings; APP names the instance)",
    }
    one = argparse.ArgumentParser(add_help=False, parents=[common])
    one.add_argument("name", metavar="NAME", help="the schedule's name")
    one.add_argument(
        "-Q", "--queue", help="the schedule's queue (needed when NAME is on several queues)"
    )
    one.add_argument("-A", "--app", **app_option)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sync = actions.add_parser(
        "sync", parents=[common], help="publish the app's periodic tasks to NATS"
    )
    sync.add_argument("-A", "--app", required=True, **app_option)
    sync.add_argument(
        "--prune", action="store_true",
        help="also delete schedules the app does not define on the queues it uses",
    )  # fmt: skip
    listing = actions.add_parser("list", parents=[common], help="show the schedules")
    listing.add_argument("-A", "--app", **app_option)
    listing.add_argument("-o", "--output", choices=["table", "json"], default="table")
    listing.add_argument(
        "-Q", "--queue", action="append", dest="queues", metavar="QUEUE",
        help="only these queues (repeat it, or separate them with commas)",
    )  # fmt: skip
    actions.add_parser("trigger", parents=[one], help="enqueue one run now")
    for action, help_text in [
        ("suspend", "stop it firing, keeping its definition"),
        ("resume", "make a suspended schedule fire again"),
        ("delete", "remove it for good"),
    ]:
        steer = actions.add_parser(action, parents=[one], help=help_text)
        steer.add_argument(
            "--force", action="store_true",
            help="also a TaskSchedule resource's schedule (<namespace>.<name>), e.g. one "
            "left behind when its operator could not delete it",
        )  # fmt: skip
    return parser


def schedule_main(argv: Sequence[str]) -> int:
    """``celeriac schedule ...``: errors are one sentence on stderr and exit status 1."""
    ns = schedule_parser().parse_args(list(argv))
    try:
        return asyncio.run(_schedule(ns))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # reported as a sentence, never as a traceback
        print(f"celeriac schedule: {_sentence(exc)}", file=sys.stderr)
        return 1


def _sentence(exc: BaseException) -> str:
    from nats.errors import Error as NatsError

    from celeriac.connection import describe
    from celeriac.exceptions import CeleriacError

    if isinstance(exc, CeleriacError | CommandError | ValueError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "NATS did not answer in time; is it up and is JetStream enabled?"
    if isinstance(exc, NatsError | OSError):
        return f"NATS failed: {describe(exc)}"
    return f"unexpected error: {describe(exc)}"


async def _schedule(ns: argparse.Namespace) -> int:
    app = _command_app(ns)
    try:
        broker = await app.broker()
        handler = _ACTIONS[ns.action]
        return await handler(app, broker, ns)
    finally:
        await app.aclose()


def _command_app(ns: argparse.Namespace) -> Celeriac:
    """The app of ``-A``, else one that only connects (and declares nothing)."""
    from celeriac.app import Celeriac

    if ns.app_spec:
        app = load_app(ns.app_spec)
        if ns.nats_url:
            app.nats_url = ns.nats_url
        return app
    return Celeriac("celeriac-cli", ns.nats_url, declare_queues=False, set_as_current=False)


def load_app(spec: str) -> Celeriac:
    """The Celeriac app of ``module`` or ``module:attribute`` (a factory is called)."""
    from celeriac.app import Celeriac

    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise CommandError(f"invalid app {spec!r}: expected MODULE or MODULE:APP")
    if "" not in sys.path:
        sys.path.insert(0, "")  # the current folder's modules, as for `python -m`
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import error, or the module failing as it runs
        raise CommandError(f"cannot import app module {module_name!r}: {exc}") from exc
    if not attr:
        apps = {id(v): v for v in vars(module).values() if isinstance(v, Celeriac)}
        if len(apps) != 1:
            found = "no Celeriac app" if not apps else f"{len(apps)} Celeriac apps"
            raise CommandError(
                f"module {module_name!r} defines {found}; name it as {module_name}:APP"
            )
        return next(iter(apps.values()))
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CommandError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if callable(obj) and not isinstance(obj, Celeriac):
        obj = obj()
    if not isinstance(obj, Celeriac):
        raise CommandError(f"{spec!r} is a {type(obj).__name__}, not a Celeriac app")
    return obj


async def _sync(app: Celeriac, broker: Broker, ns: argparse.Namespace) -> int:
    report = await app.async_sync_schedules(prune=ns.prune)
    for result in report.results:
        print(f"{result.change.value}: {result.name} (queue {result.queue})")
    print(f"{len(app.periodic_tasks)} periodic task(s) of {app.name}: {report.summary()}")
    return 0


async def _list(app: Celeriac, broker: Broker, ns: argparse.Namespace) -> int:
    from celeriac import schedulestore

    queues = None
    if ns.queues:
        queues = [q.strip() for item in ns.queues for q in item.split(",") if q.strip()]
    found = await schedulestore.list_schedules(broker.js, queues)
    if ns.output == "json":
        print(json.dumps([info.as_json() for info in found], indent=2))
    else:
        print(_table(found))
    return 0


_COLUMNS = ("NAME", "QUEUE", "TASK", "SCHEDULE", "TIME ZONE", "SUSPENDED", "NEXT", "LAST RUN",
            "RUNS", "SKIPS")  # fmt: skip


def _table(schedules: Sequence[ScheduleInfo]) -> str:
    rows = [_COLUMNS]
    for info in schedules:
        p, state = info.periodic, info.state
        rows.append((
            p.name, p.queue, p.task, info.schedule, p.time_zone if p.cron is not None else "-",
            "yes" if info.suspended else "no", _when(info.next_fire),
            (state.last_run if state else None) or "-",
            str(state.runs if state else 0), str(state.skips if state else 0),
        ))  # fmt: skip
    if len(rows) == 1:
        return "no schedules"
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


async def _trigger(app: Celeriac, broker: Broker, ns: argparse.Namespace) -> int:
    from celeriac import schedules, schedulestore

    info = await schedulestore.find_schedule(broker.js, ns.name, ns.queue)
    task_id = await schedules.trigger(broker, info.queue, info.name)
    print(f"triggered {info.name} (queue {info.queue}): task {task_id}")
    return 0


async def _suspend(app: Celeriac, broker: Broker, ns: argparse.Namespace) -> int:
    from celeriac import schedulestore

    info = await schedulestore.find_schedule(broker.js, ns.name, ns.queue)
    _unmanaged(info.name, ns.force, "suspend")
    done = await schedulestore.suspend_schedule(broker.js, info.queue, info.name)
    print(f"{'suspended' if done else 'already suspended'}: {info.name} (queue {info.queue})")
    return 0


async def _resume(app: Celeriac, broker: Broker, ns: argparse.Namespace) -> int:
    from celeriac import schedulestore

    info = await schedulestore.find_schedule(broker.js, ns.name, ns.queue)
    _unmanaged(info.name, ns.force, "resume")
    done = await schedulestore.resume_schedule(broker.js, info.queue, info.name)
    print(f"{'resumed' if done else 'not suspended'}: {info.name} (queue {info.queue})")
    return 0


async def _delete(app: Celeriac, broker: Broker, ns: argparse.Namespace) -> int:
    from celeriac import schedulestore

    info = await schedulestore.find_schedule(broker.js, ns.name, ns.queue)
    _unmanaged(info.name, ns.force, "delete")
    await schedulestore.delete_schedule(broker.js, info.queue, info.name)
    print(f"deleted: {info.name} (queue {info.queue})")
    return 0


def _unmanaged(name: str, force: bool, action: str) -> None:
    """Refuse to steer a TaskSchedule's schedule: its operator would undo it."""
    from celeriac.protocol.periodic import managed_by

    owner = managed_by(name)
    if owner is None or force:
        return
    namespace, resource = owner.split("/")
    if action == "delete":
        instead = f"kubectl delete ts {resource} -n {namespace}"
    else:
        value = "true" if action == "suspend" else "false"
        patch = f'{{"spec": {{"suspend": {value}}}}}'
        instead = f"kubectl patch ts {resource} -n {namespace} --type merge -p '{patch}'"
    raise CommandError(
        f"schedule {name} belongs to TaskSchedule {owner}, whose operator keeps it as the "
        f"spec says: {instead} (--force if that TaskSchedule is gone)"
    )


_ACTIONS: dict[str, Callable[[Celeriac, Broker, argparse.Namespace], Awaitable[int]]] = {
    "sync": _sync,
    "list": _list,
    "trigger": _trigger,
    "suspend": _suspend,
    "resume": _resume,
    "delete": _delete,
}


if __name__ == "__main__":
    sys.exit(main())
