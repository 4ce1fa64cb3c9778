"""A Flask app (sync) that hands each order's receipt email to a Celeriac worker.

    pip install flask
    celeriac worker -A shop.tasks -Q emails &        # from this folder
    flask --app flask_app run

    curl -X POST localhost:5000/orders -H 'content-type: application/json' \
         -d '{"order_id": 1, "email": "ada@example.com",
              "items": [{"price_cents": 250, "quantity": 2}]}'
    curl 'localhost:5000/tasks/<task_id>?wait=10'
"""

from __future__ import annotations

import contextlib
from typing import Any

from flask import Flask, jsonify, request
from shop.tasks import app as tasks_app
from shop.tasks import send_receipt

web = Flask(__name__)


def _bad(message: str) -> tuple[Any, int]:
    return jsonify(error=message), 400


@web.post("/orders")
def create_order() -> tuple[Any, int]:
    """Accept an order and send its receipt in the background; 202 with the task id."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _bad("expected a JSON object")
    order_id, email, items = body.get("order_id"), body.get("email"), body.get("items")
    if not isinstance(order_id, int) or not isinstance(email, str) or not isinstance(items, list):
        return _bad("expected order_id (int), email (string) and items (list)")
    result = send_receipt.delay(order_id, email, items)  # returns as soon as NATS has it
    return jsonify(task_id=result.id, state=result.state.value), 202


@web.get("/tasks/<task_id>")
def task_status(task_id: str) -> tuple[Any, int]:
    """A task's state and result; ``?wait=SECONDS`` blocks until it is ready."""
    result = tasks_app.AsyncResult(task_id)
    wait = request.args.get("wait", type=float)
    if wait:
        with contextlib.suppress(TimeoutError):  # still running: report it
            result.get(timeout=wait, propagate=False)
    body: dict[str, Any] = {"task_id": task_id, "state": result.state.value}
    if result.successful():
        body["result"] = result.result
    elif result.failed():
        record = result.record()
        body["error"] = record.error if record else None
    return jsonify(body), 200
