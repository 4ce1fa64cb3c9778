"""What a submission publishes: task messages plus group records, as one plan.

A single task, a chain, a group and a chord all turn into a ``Plan`` that the app
publishes in one pipelined batch, so canvas and batch submits share one code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from celeriac.broker import Broker
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
    """Record the groups, then publish every message (one at a time or pipelined)."""
    for group_id, children in plan.groups.items():
        await broker.results.put(group_id, ResultRecord(state=TaskState.PENDING, children=children))
    if len(plan.items) == 1:
        item = plan.items[0]
        await broker.publish_task(item.message, countdown=item.countdown, eta=item.eta)
    elif plan.items:
        await broker.publish_many(plan.items)
