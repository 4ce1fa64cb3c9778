"""Celeriac: a Kubernetes-native distributed task queue on NATS JetStream.

The public names are importable from here (``from celeriac import Celeriac, chain``);
they load lazily so ``celeriac.protocol`` and the operator stay light to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.async_result import AsyncResult, GroupResult
    from celeriac.canvas import Signature, chain, chord, group
    from celeriac.current import current_app
    from celeriac.exceptions import (
        BatchPublishError,
        CeleriacError,
        ImproperlyConfigured,
        MaxRetriesExceededError,
        NatsRefusedError,
        PublishError,
        Retry,
        SoftTimeLimitExceeded,
        TaskError,
        TimeLimitExceeded,
    )
    from celeriac.natsauth import NatsAuth
    from celeriac.protocol.states import TaskState
    from celeriac.shared import shared_task
    from celeriac.task import Task

_EXPORTS = {
    "Celeriac": "celeriac.app",
    "AsyncResult": "celeriac.async_result",
    "GroupResult": "celeriac.async_result",
    "Signature": "celeriac.canvas",
    "chain": "celeriac.canvas",
    "chord": "celeriac.canvas",
    "group": "celeriac.canvas",
    "current_app": "celeriac.current",
    "shared_task": "celeriac.shared",
    "ImproperlyConfigured": "celeriac.exceptions",
    "MaxRetriesExceededError": "celeriac.exceptions",
    "BatchPublishError": "celeriac.exceptions",
    "CeleriacError": "celeriac.exceptions",
    "NatsRefusedError": "celeriac.exceptions",
    "NatsAuth": "celeriac.natsauth",
    "PublishError": "celeriac.exceptions",
    "Retry": "celeriac.exceptions",
    "SoftTimeLimitExceeded": "celeriac.exceptions",
    "TaskError": "celeriac.exceptions",
    "TimeLimitExceeded": "celeriac.exceptions",
    "TaskState": "celeriac.protocol.states",
    "Task": "celeriac.task",
}

__all__ = [
    "AsyncResult",
    "BatchPublishError",
    "Celeriac",
    "CeleriacError",
    "GroupResult",
    "ImproperlyConfigured",
    "MaxRetriesExceededError",
    "NatsAuth",
    "NatsRefusedError",
    "PublishError",
    "Retry",
    "Signature",
    "SoftTimeLimitExceeded",
    "Task",
    "TaskError",
    "TaskState",
    "TimeLimitExceeded",
    "__version__",
    "chain",
    "chord",
    "current_app",
    "group",
    "shared_task",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'celeriac' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
