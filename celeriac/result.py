"""Celery's module name for result handles: ``from celeriac.result import AsyncResult``.

The classes live in ``celeriac.async_result``; this module only gives them the import
path Celery code uses.
"""

from __future__ import annotations

from celeriac.async_result import AsyncResult, GroupResult

__all__ = ["AsyncResult", "GroupResult"]
