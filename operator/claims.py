"""Who owns a queue: the claim a TaskQueue writes into its stream's metadata (pure).

Queue names are global (the SDK and workers address a queue by name only), while
TaskQueues live in namespaces. So a queue belongs to exactly one TaskQueue: the
first one to create (or adopt) the queue's work stream records itself as the
owner in the stream config's ``metadata`` map, and every other TaskQueue naming
the same queue is refused and leaves the stream, its consumer and its
dead-letter stream alone.

The owner is ``<namespace>/<name>``, not the object's uid: a TaskQueue deleted
and created again under the same name (or restored from a backup) is the same
owner. A stream without a claim (declared by the SDK or a worker on a laptop, or
made by an operator without claims) is adopted by the first TaskQueue that
reconciles it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

OWNER_KEY = "celeriac.io/owner"
# nats-server adds (and manages) its own metadata keys under this prefix.
SERVER_KEY_PREFIX = "_nats."


class Verdict(enum.Enum):
    """What a TaskQueue may do with a queue's JetStream objects."""

    ADOPT = "adopt"  # nobody owns them (or they do not exist): claim them, then manage them
    OWNED = "owned"  # this TaskQueue owns them: manage them
    CLAIMED = "claimed"  # another TaskQueue owns them: touch nothing


@dataclass(frozen=True)
class Claim:
    """The verdict, and the current owner when it is someone else."""

    verdict: Verdict
    owner: str | None = None


def owner_of(namespace: str, name: str) -> str:
    """How a TaskQueue is named in a claim."""
    return f"{namespace}/{name}"


def decide(metadata: Mapping[str, str] | None, owner: str) -> Claim:
    """The claim verdict for TaskQueue ``owner`` on a stream with ``metadata``.

    ``metadata`` is None when the stream does not exist.
    """
    current = (metadata or {}).get(OWNER_KEY) or ""
    if not current.strip():
        return Claim(Verdict.ADOPT)
    if current == owner:
        return Claim(Verdict.OWNED, owner)
    return Claim(Verdict.CLAIMED, current)


def user_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """``metadata`` without the keys nats-server manages itself."""
    return {k: v for k, v in (metadata or {}).items() if not k.startswith(SERVER_KEY_PREFIX)}


def claimed(metadata: Mapping[str, str] | None, owner: str) -> dict[str, str]:
    """The metadata to write so that ``owner`` holds the claim (other keys kept)."""
    return {**user_metadata(metadata), OWNER_KEY: owner}


def released(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """The metadata to write to give up the claim (other keys kept)."""
    return {k: v for k, v in user_metadata(metadata).items() if k != OWNER_KEY}


def refusal(queue: str, owner: str) -> str:
    """The status message of a TaskQueue refused because ``owner`` holds ``queue``."""
    return (
        f"queue {queue} belongs to TaskQueue {owner}; this TaskQueue takes it over "
        "once that one is deleted"
    )
