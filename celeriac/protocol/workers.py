"""Live workers on the wire: each announces itself in the ``celeriac_workers`` bucket.

A worker puts its record under its name when it starts and again every
``HEARTBEAT_SECONDS``; the bucket's age limit (``WORKERS_TTL_SECONDS``) removes the
record of a worker that stopped heartbeating, so a killed pod disappears by itself.
A worker that stops cleanly deletes its record. Anyone may read the bucket (``celeriac
inspect workers``, the dashboard); only the worker writes its own key.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from celeriac.protocol.envelope import _rfc3339, _Strict

# The variable naming a worker (the operator sets the pod's name); default host-pid.
WORKER_NAME_ENV = "CELERIAC_WORKER_NAME"
HEARTBEAT_SECONDS = 10.0
# Three missed heartbeats and the record is gone.
WORKERS_TTL_SECONDS = 3 * HEARTBEAT_SECONDS
# Tasks listed by name in a record: enough to see what a worker is busy with, few
# enough that the record stays small (``running`` always counts them all).
MAX_ACTIVE_LISTED = 100
# What a KV key may hold; anything else in a worker's name becomes '-'.
_NOT_IN_KEY = re.compile(r"[^-_=.a-zA-Z0-9]")


def worker_key(name: str) -> str:
    """The bucket key of the worker called ``name`` (a pod name, or host-pid)."""
    return _NOT_IN_KEY.sub("-", name).strip(".")[:255] or "worker"


class ActiveTask(_Strict):
    """One task a worker holds right now."""

    id: str | None = None  # None until the message is decoded (or when it is not a task)
    task: str | None = None
    queue: str
    started: datetime  # when the worker took the message

    @field_validator("started", mode="before")
    @classmethod
    def _time(cls, v: Any) -> Any:
        return _rfc3339(v)


class WorkerRecord(_Strict):
    """What a worker says of itself in the ``celeriac_workers`` bucket."""

    v: Literal[1] = 1
    name: str = Field(min_length=1, max_length=255)
    hostname: str
    pid: int = Field(ge=0)
    version: str
    queues: list[str]
    pool: str
    concurrency: int = Field(ge=1)
    running: int = Field(ge=0, description="tasks held right now")
    succeeded: int = Field(ge=0)
    failed: int = Field(ge=0, description="tasks that failed for good")
    retried: int = Field(ge=0)
    state: Literal["running", "draining"] = "running"
    started: datetime
    seen: datetime  # when this record was written
    # Added after the first release: defaults keep older records readable.
    active: list[ActiveTask] = Field(
        default_factory=list,
        description=f"tasks held right now, at most {MAX_ACTIVE_LISTED} (``running`` counts all)",
    )
    registered: list[str] = Field(default_factory=list, description="task names, sorted")

    @field_validator("started", "seen", mode="before")
    @classmethod
    def _time(cls, v: Any) -> Any:
        return _rfc3339(v)

    @property
    def processed(self) -> int:
        """Tasks finished, either way."""
        return self.succeeded + self.failed
