"""A FastAPI app (async) that hands each order's receipt email to a Celeriac worker.

    pip install fastapi uvicorn
    celeriac worker -A shop.tasks -Q emails &        # from this folder
    uvicorn fastapi_app:api

Same endpoints as flask_app.py; every Celeriac call here is an ``a``-prefixed twin
awaited on the server's own event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field
from shop.tasks import app as tasks_app
from shop.tasks import send_receipt


class OrderLine(BaseModel):
    """One line of an order."""

    price_cents: int = Field(ge=0)
    quantity: int = Field(ge=1)


class Order(BaseModel):
    """An order whose receipt is to be emailed."""

    order_id: int
    email: str
    items: list[OrderLine] = Field(min_length=1)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Close the NATS connection when the server stops."""
    yield
    await tasks_app.aclose()


api = FastAPI(title="shop", lifespan=lifespan)


@api.post("/orders", status_code=202)
async def create_order(order: Order) -> dict[str, str]:
    """Accept an order and send its receipt in the background."""
    items = [line.model_dump() for line in order.items]
    result = await send_receipt.adelay(order.order_id, order.email, items)
    return {"task_id": result.id, "state": (await result.astate()).value}


@api.get("/tasks/{task_id}")
async def task_status(task_id: str, wait: float = 0.0) -> dict[str, Any]:
    """A task's state and result; ``?wait=SECONDS`` waits until it is ready."""
    result = tasks_app.AsyncResult(task_id)
    if wait > 0:
        with contextlib.suppress(TimeoutError):  # still running: report it
            await result.aget(timeout=wait, propagate=False)
    record = await result.arecord()
    state = await result.astate()
    body: dict[str, Any] = {"task_id": task_id, "state": state.value}
    if record is not None and state.value == "SUCCESS":
        body["result"] = record.result
    elif record is not None and state.value == "FAILURE":
        body["error"] = record.error
    return body
