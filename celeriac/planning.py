"""What a submission publishes: task messages plus group records, as one plan.

A single task, a chain, a group and a chord all turn into a ``Plan`` that the app
publishes in one pipelined batch, so canvas and batch submits share one code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nats.errors import Error as NatsError

from celeriac.broker import Broker
from celeriac.connection import describe
from celeriac.exceptions import BatchPublishError, PublishError
from celeriac.protocol.envelope import ResultRecord
from celeriac.protocol.states import TaskState
from celeriac.submitting import Delayed


@dataclass
class Plan:
    """Messages to enqueue, and group memberships to record under the group ids."""

    items: list[Delayed] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)

    def extend(self, other: Plan) -> None:
        """Add ``other``'s messages and groups to this plan."""
        self.items.extend(other.items)
        self.groups.update(other.groups)


async def execute(broker: Broker, plan: Plan) -> None:
    """Record the groups, then publish every message (one at a time or pipelined).

    Raises ``PublishError`` (``BatchPublishError`` for several) naming the task ids.
    """
    for group_id, children in plan.groups.items():
        record = ResultRecord(state=TaskState.PENDING, children=children)
        try:
            await broker.results.put(group_id, record)
        except (NatsError, TimeoutError) as exc:
            ids = [item.message.id for item in plan.items]
            kind = PublishError if len(ids) == 1 else BatchPublishError
            raise kind(
                f"group {group_id} could not be recorded ({describe(exc)}); none of its "
                f"{len(ids)} task(s) were sent, submit it again",
                dict.fromkeys(ids, exc),
            ) from exc
    if len(plan.items) == 1:
        await broker.submit_task(plan.items[0])
    elif plan.items:
        await broker.publish_many(plan.items)
