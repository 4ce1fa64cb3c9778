"""Periodic tasks on a broker: publish an app's schedules, sync them, trigger a run.

Storing, listing and steering schedules is ``celeriac.schedulestore``'s (on the
broker's JetStream context); this module adds what needs the SDK's broker: creating
the queue when declaring is on, and enqueueing a run as a worker does for a fire.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from celeriac.broker import Broker
from celeriac.exceptions import ScheduleNotSupported
from celeriac.periodic import run_window
from celeriac.protocol import names
from celeriac.protocol.periodic import PeriodicTask, managed_by, run_id
from celeriac.schedulestore import Change, delete_schedule, find_schedule, schedule_names, store
from celeriac.submitting import prepare


@dataclass(frozen=True)
class SyncResult:
    """One schedule a sync touched."""

    queue: str
    name: str
    change: Change


@dataclass
class SyncReport:
    """What ``sync_schedules`` did, one entry per schedule."""

    results: list[SyncResult] = field(default_factory=list)

    def count(self, change: Change) -> int:
        """How many schedules had ``change``."""
        return sum(1 for r in self.results if r.change is change)

    def summary(self) -> str:
        """``2 created, 1 unchanged`` (or ``no schedules``)."""
        parts = [f"{self.count(c)} {c.value}" for c in Change if self.count(c)]
        return ", ".join(parts) or "no schedules"


async def publish_schedule(broker: Broker, p: PeriodicTask) -> Change:
    """Store ``p`` as its queue's schedule (creating the queue when declaring is on).

    A schedule that is already stored as given is left alone, so syncing again does
    not restart an ``every`` schedule's phase. A suspended schedule stays suspended;
    only its stored definition changes.
    """
    info = await broker.ensure_queue(p.queue)
    if not info.schedules:
        raise ScheduleNotSupported(
            f"periodic task {p.name!r}: stream {names.stream_name(p.queue)} does not allow "
            "message schedules (nats-server 2.14+ and allow_msg_schedules are required)"
        )
    return await store(broker.js, p, keys=broker.signing_keys)


async def trigger(broker: Broker, queue: str, name: str) -> str:
    """Enqueue one run of schedule ``name`` now, as a worker does for a fire; its id.

    The run's id is ``run_id(name, now to the second)``, so a trigger in the same second
    as a slot is that slot's run. It expires like a scheduled run: ``expires`` after
    now, else at the next slot. A suspended schedule can be triggered too.
    """
    info = await find_schedule(broker.js, name, queue)
    p = info.periodic
    slot = datetime.now(UTC).replace(microsecond=0)
    options: dict[str, Any] = {
        "task_id": run_id(p.name, slot),
        "queue": p.queue,
        "expires": slot + run_window(p, slot),
        "headers": dict(p.headers) or None,
    }
    item = prepare(p.task, p.args, p.kwargs, options, call="trigger", default_queue=p.queue)
    await broker.submit_task(item)
    return item.message.id


async def sync_schedules(
    broker: Broker,
    periodic: Iterable[PeriodicTask],
    *,
    prune: bool = False,
    queues: Iterable[str] = (),
) -> SyncReport:
    """Publish every definition in ``periodic``; with ``prune``, delete the schedules on
    their queues (and on ``queues``) that ``periodic`` does not define, except the
    TaskSchedule resources' (``<namespace>.<name>``)."""
    defined = list(periodic)
    report = SyncReport()
    for p in defined:
        report.results.append(SyncResult(p.queue, p.name, await publish_schedule(broker, p)))
    if prune:
        keep = {(p.queue, p.name) for p in defined}
        scope = {p.queue for p in defined} | set(queues)
        for queue in sorted(scope):
            for stale in await schedule_names(broker.js, queue):
                # A TaskSchedule's schedule is the operator's to delete, not an app's.
                if (queue, stale) not in keep and managed_by(stale) is None:
                    await delete_schedule(broker.js, queue, stale)
                    report.results.append(SyncResult(queue, stale, Change.DELETED))
    return report
