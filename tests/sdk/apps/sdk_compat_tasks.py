"""Tasks written the Celery way (``shared_task``, exceptions caught by type), run by
real workers in the SDK compatibility tests."""

from __future__ import annotations

import decimal
import json
import os
from typing import Any

from sdk_compat_errors import OutOfStockError

from celeriac import Celeriac, shared_task


# Defined before any app exists, as a library's task is.
@shared_task(name="compat.shared_add")
def shared_add(a: int, b: int) -> int:
    return a + b


compat_app = Celeriac("sdk-compat", default_queue=os.environ.get("SDK_E2E_QUEUE", "default"))


# Defined after the app, as a Django project's tasks.py is.
@shared_task(name="compat.whoami", bind=True)
def whoami(self: Any, tag: str) -> list[str]:
    return [self.request.id, tag, self.app.name]


FAILURES: dict[str, type[Exception]] = {
    "value": ValueError,
    "key": KeyError,
    "decimal": decimal.InvalidOperation,
    "custom": OutOfStockError,
}


@compat_app.task(name="compat.fail", max_retries=0)
def fail(kind: str, message: str) -> None:
    if kind == "json":
        json.loads(message)
    raise FAILURES[kind](message)
